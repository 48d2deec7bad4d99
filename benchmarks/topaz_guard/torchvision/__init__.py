"""A stand-in for the two torchvision functions Topaz 0.3 imports (benchmark only, not cryoshot).

PyPI's torchvision does not import beside the torch 2.13 CPU build these machines use, and
Topaz needs only rotate/hflip/vflip of tensors for its training augmentation.
"""

from . import transforms  # noqa: F401
