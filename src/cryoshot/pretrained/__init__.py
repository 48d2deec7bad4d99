"""Shipped pre-trained models (see README.md beside this file for how they were made)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cryoshot.errors import CryoshotError

DEFAULT_MODEL = "protonet-ce_cryoshot-small.pt"
DEFAULT_PICKER = "mae_cryoshot-picker.pt"


def _resolve(name: str | None, shipped: str, what: str) -> Path:
    """``default`` (or None) -> the shipped file ``shipped``; otherwise ``name`` as a path that must exist."""
    if name in (None, "default"):
        path = Path(str(resources.files("cryoshot.pretrained") / shipped))
        if not path.is_file():
            raise CryoshotError(f"the shipped {what} {shipped} is missing from this installation")
        return path
    path = Path(name)
    if not path.is_file():
        raise CryoshotError(f"model file {path} does not exist; use --model default for the shipped {what}")
    return path


def resolve_model(name: str | None) -> Path:
    """``default`` (or None) -> the shipped ProtoNet-CE model; otherwise a path to a checkpoint."""
    return _resolve(name, DEFAULT_MODEL, "model")


def resolve_picker_model(name: str | None) -> Path:
    """``default`` (or None) -> the shipped picker MAE; otherwise a path to an MAE or a picker.pt."""
    return _resolve(name, DEFAULT_PICKER, "picker model")


DEFAULT_SIAMESE = "siamese_cryoshot-polar.pt"


def resolve_siamese_model(name: str | None) -> Path:
    """``default`` (or None) -> the shipped Siamese 2D embedding; otherwise a path to one."""
    return _resolve(name, DEFAULT_SIAMESE, "Siamese 2D model")
