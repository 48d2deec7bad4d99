"""Embedding volumes with a model: resampling to its grid, batching, precision.

Every method that uses a learned encoder embeds through :func:`embed_volumes`, so the
resampling and the bf16 choice are made in one place.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoshot.data.transforms import FLIPS, set_polarity, to_model_grid
from cryoshot.errors import CryoshotError
from cryoshot.models.fast_cpu import fast_features
from cryoshot.models.protonet import ProtoNet

CONTRASTS = ("auto", "bright", "dark")
# Wedge-preserving rotations whose embeddings are averaged (test-time augmentation): 4 gains 2.5-3 points
# of 5-way accuracy at SNR 0.03 on the novel structures, at 4x the embedding cost (docs/benchmarks.md).
EMBED_ROTATIONS = 4


def use_bf16(device: torch.device, precision: str | None = None) -> bool:
    """Whether inference computes in bfloat16 (the oneDNN copy of ``models.fast_cpu``, else autocast).

    ``precision`` is "fp32", "bf16" or "auto" (default: the ``CRYOSHOT_PRECISION``
    environment variable, else "auto"). "auto" takes bf16 on a CPU with native bf16
    instructions (AVX-512 BF16 / AMX), where it is faster, and fp32 elsewhere.
    """
    precision = (precision or os.environ.get("CRYOSHOT_PRECISION", "auto")).lower()
    if precision not in ("auto", "fp32", "bf16"):
        raise CryoshotError(f"precision must be auto, fp32 or bf16 (CRYOSHOT_PRECISION), got '{precision}'")
    if precision == "auto":
        if device.type != "cpu":
            return False
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # an older or a non-oneDNN torch build
            return False
    return precision == "bf16"


@torch.no_grad()
def embed_volumes(
    model: ProtoNet,
    volumes: np.ndarray,
    voxel_size_A: float,
    batch_size: int = 32,
    progress: bool = True,
    precision: str | None = None,
    contrast: str = "auto",
    rotations: int | None = None,
) -> torch.Tensor:
    """Embed (N, D, D, D) volumes at ``voxel_size_A``; returns (N, dim) float32 on CPU.

    Small batches keep the activations in cache; ``precision`` as in :func:`use_bf16`. The models
    see protein bright: ``contrast`` "auto" flips a set that looks protein-dark (the majority of
    its volumes has a darker centre than edge after a strong low-pass, see ``set_polarity``),
    "bright" takes the volumes as they are, "dark" flips them. ``rotations`` (1, 2 or 4; default
    :data:`EMBED_ROTATIONS`) averages the embeddings of each volume under that many of the four
    wedge-preserving rotations (``FLIPS``), at that many times the cost.
    """
    rotations = EMBED_ROTATIONS if rotations is None else rotations
    if rotations not in (1, 2, 4):
        raise CryoshotError(f"rotations must be 1, 2 or 4 (wedge-preserving rotations averaged), got {rotations}")
    if contrast not in CONTRASTS:
        raise CryoshotError(f"contrast must be one of {', '.join(CONTRASTS)}, got '{contrast}'")
    sign = set_polarity(volumes) if contrast == "auto" and len(volumes) else -1 if contrast == "dark" else 1
    if sign < 0 and contrast == "auto":
        print("cryoshot: note: these subtomograms look protein-dark (raw-data contrast); they are flipped to "
              "protein-bright for the model", file=sys.stderr)  # fmt: skip
    cfg = model.encoder.config
    dev = next(model.encoder.parameters()).device
    bf16 = use_bf16(dev, precision)
    fast = fast_features(model.encoder, bf16)  # the oneDNN copy on a CPU (models/fast_cpu.py), else None
    features = fast or model.encoder.features
    bf16 = bf16 and fast is None  # autocast only on the eager path
    out = []
    for s in tqdm(range(0, len(volumes), batch_size), desc="embedding", disable=not progress, leave=False):
        x = sign * torch.as_tensor(np.asarray(volumes[s : s + batch_size], dtype=np.float32))
        x = to_model_grid(x, voxel_size_A, cfg.voxel_size_A, cfg.input_box).to(dev)
        grids = model.encoder.prepare(x, FLIPS[:rotations])  # (R, B, 1, n, n, n), one forward FFT
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):  # one rotation at a time: in cache
            z = sum(features(g).float() for g in grids)
        out.append((z / rotations).cpu())
    return torch.cat(out)
