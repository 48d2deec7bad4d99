"""Episodic evaluation of any few-shot method on a labelled subtomogram set.

All classes of the data are treated as novel. The encoder embeds every
subtomogram once (after resampling to the model's box and voxel size); episodes
(seeded) then only re-run the cheap few-shot heads.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoshot.data.episodes import EpisodeSampler
from cryoshot.evaluate.metrics import macro_precision, mean_ci95


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
