"""cryoshot: few-shot learning for cryo-EM and cryo-ET."""

__version__ = "0.1.0"

from cryoshot.errors import CryoshotError  # noqa: E402

__all__ = ["CryoshotError", "__version__"]
