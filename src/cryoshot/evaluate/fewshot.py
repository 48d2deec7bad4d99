"""Episodic evaluation of any few-shot method on a labelled subtomogram set.

All classes of the data are treated as novel. The encoder embeds every
subtomogram once (after resampling to the model's box and voxel size); episodes
(seeded) then only re-run the cheap few-shot heads.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoshot.data.episodes import EpisodeSampler
from cryoshot.data.transforms import to_model_grid
from cryoshot.errors import CryoshotError
from cryoshot.evaluate.metrics import macro_precision, mean_ci95
from cryoshot.fewshot.protonet import ProtoNet


def use_bf16(device: torch.device, precision: str | None = None) -> bool:
    """Whether inference runs under bfloat16 autocast.

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
) -> torch.Tensor:
    """Embed (N, D, D, D) volumes at ``voxel_size_A``; returns (N, dim) float32 on CPU.

    Small batches keep the activations in cache; ``precision`` as in :func:`use_bf16`.
    """
    cfg = model.encoder.config
    dev = next(model.parameters()).device
    bf16 = use_bf16(dev, precision)
    out = []
    for s in tqdm(range(0, len(volumes), batch_size), desc="embedding", disable=not progress, leave=False):
        x = torch.as_tensor(np.asarray(volumes[s : s + batch_size], dtype=np.float32))
        x = to_model_grid(x, voxel_size_A, cfg.voxel_size_A, cfg.input_box)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(model.embed(x.to(dev)).float().cpu())
    return torch.cat(out)


def evaluate_episodes(
    method,
    embeddings: torch.Tensor,
    labels: np.ndarray,
    *,
    name: str,
    way: int = 5,
    shot: int = 5,
    query: int = 15,
    episodes: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run seeded N-way K-shot episodes; return the metrics as a JSON-ready dict.

    Keys: method, way, shot, query, episodes, seed, accuracy_mean, accuracy_ci95,
    macro_precision, per_class_accuracy ({label: accuracy over all its queries}), seconds.
    """
    sampler = EpisodeSampler(labels, way, shot, query, seed=seed)
    accs, precs = [], []
    correct: dict[str, list[int]] = {str(c): [0, 0] for c in sampler.classes}
    t0 = time.perf_counter()
    for e in tqdm(range(episodes), desc=f"{name} episodes", disable=not progress, leave=False):
        ep = sampler.episode(e)
        zs = embeddings[ep.support.ravel()]
        zq = embeddings[ep.query.ravel()]
        ts = torch.as_tensor(ep.support_targets)
        tq = ep.query_targets
        with torch.no_grad():
            pred = method.scores(zs, ts, zq, way).argmax(1).numpy()
        accs.append(float((pred == tq).mean()))
        precs.append(macro_precision(tq, pred, way))
        for j, c in enumerate(ep.classes):
            sel = tq == j
            correct[str(c)][0] += int((pred[sel] == j).sum())
            correct[str(c)][1] += int(sel.sum())
    acc, ci = mean_ci95(np.array(accs))
    return {
        "method": name,
        "way": way,
        "shot": shot,
        "query": query,
        "episodes": episodes,
        "seed": seed,
        "accuracy_mean": acc,
        "accuracy_ci95": ci,
        "macro_precision": float(np.mean(precs)),
        "per_class_accuracy": {c: (n / t if t else None) for c, (n, t) in correct.items()},
        "seconds": time.perf_counter() - t0,
    }
