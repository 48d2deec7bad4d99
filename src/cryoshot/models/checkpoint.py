"""Checkpoints that rebuild and reproduce a model from the file alone.

Each file stores ``{state_dict, config, method, package version, seed, argv}``
plus, for resuming, the optimiser state, step and RNG states. Writes are atomic.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any

import torch

from cryoshot import __version__
from cryoshot.errors import CryoshotError
from cryoshot.utils.files import atomic_file
from cryoshot.utils.runrecord import current_run

FORMAT = "cryoshot-checkpoint-1"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` plus format, version and argv atomically (replacing ``path``)."""
    data = {"format": FORMAT, "version": __version__, "argv": [str(a) for a in sys.argv], **payload}
    if current_run.get() is not None and "run" not in data:  # the command's resolved settings
        data["run"] = current_run.get()
    for key in ("state_dict", "config", "method", "seed"):
        if key not in data:
            raise ValueError(f"checkpoint payload lacks '{key}'")
    with atomic_file(path, force=True) as tmp:
        torch.save(data, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, method: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read a checkpoint and check its format and method.

    Raises
    ------
    CryoshotError
        Missing or unreadable file, not a cryoshot checkpoint, another method, or a
        major version the code cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise CryoshotError(f"model file {path} does not exist")
    if path.is_dir():
        raise CryoshotError(f"model file {path} is a folder, not a file; give the .pt file inside it")
    try:
        # weights_only: tensors and plain data only; a pickle that would build arbitrary objects
        # (and so run code) is refused by torch's restricted unpickler before anything runs.
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CryoshotError(
            f"refusing to load {path}: it is not a plain cryoshot checkpoint (it holds Python objects "
            "other than tensors and plain data, which could run code); use a model written by cryoshot"
        ) from exc
    except Exception as exc:  # torch raises several types for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CryoshotError(f"cannot read model file {path}: {first}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CryoshotError(f"{path} is not a cryoshot checkpoint")
    major = str(data.get("version", "0")).split(".")[0]
    if major != __version__.split(".")[0]:
        raise CryoshotError(
            f"{path} was written by cryoshot {data.get('version')}, which this version ({__version__}) "
            "cannot read; retrain or use a matching version"
        )
    if method is not None:
        allowed = (method,) if isinstance(method, str) else method
        if data["method"] not in allowed:
            raise CryoshotError(f"{path} holds a '{data['method']}' model, but {' or '.join(allowed)} is needed")
    return data


VALIDATION_KEYS = ("best_val_accuracy", "best_val_ap", "best_val_ari", "best_val_loss")


def provenance(path: str | os.PathLike) -> dict[str, Any]:
    """How a model file was made, from the file alone: plain data for ``cryoshot models``.

    Returns
    -------
    dict with ``file``, ``sha256``, ``size_bytes``, ``method``, ``version``, ``seed``, ``encoder``
    (3D models) and ``stages``: one entry per training stage, oldest first, each with its
    ``method``, ``argv`` (the command), ``seed``, ``version``, ``episodes``, ``best_episode`` and
    ``validation`` (the kept model's validation figure, named). ``stages_recorded`` is False for
    files written before every stage was recorded (only the last stage is then known).
    """
    from cryoshot.utils.hashing import file_sha256

    path = Path(path)
    ck = load_checkpoint(path)
    recorded = bool(ck.get("stages"))
    stages = ck.get("stages") or [{**{k: ck.get(k) for k in ("method", "config", "version", "seed", "argv")},
                                   "episodes": ck.get("episode"), "best_episode": ck.get("best_episode"),
                                   **{k: ck.get(k) for k in VALIDATION_KEYS}}]  # fmt: skip
    stages = [dict(st) for st in stages]
    stages[-1].update({k: ck[k] for k in VALIDATION_KEYS if ck.get(k) is not None})  # the file's own figures
    config = ck.get("config") or {}
    return {
        "file": str(path), "sha256": file_sha256(path), "size_bytes": path.stat().st_size,
        "method": ck.get("method"), "version": ck.get("version"), "seed": ck.get("seed"),
        "encoder": config.get("encoder") if isinstance(config.get("encoder"), str) else None,
        "stages_recorded": recorded,
        "stages": [{
            "method": st.get("method"), "argv": [str(a) for a in st.get("argv") or []], "seed": st.get("seed"),
            "version": st.get("version"), "episodes": st.get("episodes"), "best_episode": st.get("best_episode"),
            "validation": _validation(st),
            "started_from": (st.get("file") or {}).get("name"),
        } for st in stages],
    }  # fmt: skip


def _validation(stage: dict) -> dict[str, float]:
    """The kept model's validation figures of a stage, named (``ap`` replaces the picker's alias ``accuracy``)."""
    out = {k[len("best_val_") :]: float(stage[k]) for k in VALIDATION_KEYS if stage.get(k) is not None}
    if "ap" in out:
        out.pop("accuracy", None)
    return out
