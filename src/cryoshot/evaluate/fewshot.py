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


def evaluate_set(
    data: str | os.PathLike,
    *,
    method: str = "protonet",
    model: str | os.PathLike | None = "default",
    way: int = 5,
    shot: int = 5,
    query: int = 15,
    episodes: int = 100,
    distance: str | None = None,
    label_column: str = "rlnClassNumber",
    angpix: float | None = None,
    tilt_range: tuple[float, float] | None = (-60.0, 60.0),
    seed: int = 0,
    progress: bool = True,
    rotations: int | None = None,
) -> dict:
    """``cryoshot evaluate``: seeded N-way K-shot episodes on a labelled subtomogram set (every class novel).

    Parameters mirror the command's flags: ``model`` is ``"default"`` (the shipped model) or a
    checkpoint path (ignored by methods that need none); ``tilt_range`` in degrees (None: no
    missing wedge) is template matching's wedge; ``rotations`` (1, 2 or 4; None: the default) how many
    wedge-preserving rotations the learned methods average each embedding over.

    Returns
    -------
    dict: the episode results of :func:`evaluate_episodes` plus ``model``, ``n_subtomograms``,
    ``box``, ``voxel_size_A`` and ``duplicates_dropped``.
    """
    from cryoshot.fewshot.methods import make_method, method_spec
    from cryoshot.io.particles import load_subtomogram_set
    from cryoshot.models.loading import load_model
    from cryoshot.pretrained import resolve_model
    from cryoshot.utils.threads import configure_threads

    configure_threads()
    spec = method_spec(method)
    model_path = resolve_model(str(model) if model is not None else None, method) if spec.needs_model else None
    net = load_model(model_path)[0] if model_path is not None else None
    ds = load_subtomogram_set(data, label_column=label_column, angpix=angpix, progress=progress)
    EpisodeSampler(ds.labels, way, shot, query, seed)  # validates before the costly embedding
    m = make_method(method, net, distance, seed=seed, tilt_range=tilt_range, rotations=rotations)
    z = m.embed(ds.volumes, ds.voxel_size_A, progress=progress)
    name = method if distance is None else f"{method}[{distance}]"
    res = evaluate_episodes(m, z, ds.labels, name=name, way=way, shot=shot, query=query, episodes=episodes,
                            seed=seed, progress=progress)  # fmt: skip
    res.update({"model": str(model_path) if model_path is not None else None, "n_subtomograms": len(ds),
                "box": ds.box, "voxel_size_A": ds.voxel_size_A, "duplicates_dropped": ds.n_duplicates})  # fmt: skip
    return res
