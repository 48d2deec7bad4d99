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
