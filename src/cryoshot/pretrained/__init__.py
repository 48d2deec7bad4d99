"""Shipped pre-trained models (see README.md beside this file for how they were made)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cryoshot.errors import CryoshotError

DEFAULT_MODEL = "protonet-ce_cryoshot-small.pt"
DEFAULT_FSCC = "fscc_cryoshot-small.pt"
DEFAULT_PICKER = "mae_cryoshot-picker.pt"
# methods whose --model default is the FSCC model (a cross-entropy + SupCon encoder with base statistics)
FSCC_METHODS = ("fscc", "baseline", "baseline++")


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


def resolve_model(name: str | None, method: str | None = None) -> Path:
    """``default`` (or None) -> the shipped model for ``method`` (the FSCC model for fscc, baseline and
    baseline++; the ProtoNet-CE model otherwise); any other name -> a path to a checkpoint."""
    return _resolve(name, DEFAULT_FSCC if method in FSCC_METHODS else DEFAULT_MODEL, "model")


def resolve_picker_model(name: str | None) -> Path:
    """``default`` (or None) -> the shipped picker MAE; otherwise a path to an MAE or a picker.pt."""
    return _resolve(name, DEFAULT_PICKER, "picker model")


DEFAULT_SIAMESE = "siamese_cryoshot-polar.pt"


def resolve_siamese_model(name: str | None) -> Path:
    """``default`` (or None) -> the shipped Siamese 2D embedding; otherwise a path to one."""
    return _resolve(name, DEFAULT_SIAMESE, "Siamese 2D model")


# name -> (file, what uses it); ``cryoshot models`` lists these with their provenance
SHIPPED: dict[str, tuple[str, str]] = {
    "default": (DEFAULT_MODEL, "classify, evaluate and demo on subtomograms (--model default)"),
    "fscc": (DEFAULT_FSCC, "classify and evaluate with --method fscc, baseline or baseline++ (--model default)"),
    "picker": (DEFAULT_PICKER, "pick (--model default)"),
    "siamese": (
        DEFAULT_SIAMESE,
        "embed, cluster and classify on 2D particle images (--model default); pick's view opinion",
    ),
}


def shipped_model_path(name: str) -> Path:
    """The installed file of shipped model ``name`` (a key of :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise CryoshotError(f"no shipped model '{name}'; shipped: {', '.join(SHIPPED)}")
    return _resolve(None, SHIPPED[name][0], f"model '{name}'")


def _describe_shipped(name: str) -> dict:
    """Shipped model ``name`` with what uses it and its provenance (see ``models.checkpoint.provenance``)."""
    from cryoshot.models.checkpoint import provenance

    return {"name": name, "used_by": SHIPPED[name][1], **provenance(shipped_model_path(name))}


def shipped_models() -> list[dict]:
    """Every shipped model with what uses it and its provenance."""
    return [_describe_shipped(name) for name in SHIPPED]


def describe_models(name: str | None = None) -> list[dict]:
    """``cryoshot models``: every shipped model (``name`` None), one shipped model by name, or any model file."""
    from cryoshot.models.checkpoint import provenance

    if name is None:
        return shipped_models()
    if name in SHIPPED:
        return [_describe_shipped(name)]
    if not Path(name).is_file():
        raise CryoshotError(f"'{name}' is neither a shipped model ({', '.join(SHIPPED)}) nor a model file")
    return [{"name": Path(name).name, "used_by": "", **provenance(name)}]
