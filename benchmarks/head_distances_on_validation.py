"""d, d* and d + d* of ProtoNet-CE models on the procedural *validation* classes (not the novel structures).

Asks whether a trained attention head changes any decision: 30 procedural validation
classes (never trained on), 20 items each at one SNR (pool seed 5000, unlike training's),
300 seeded 5-way episodes per shot, 15 queries per class, no augmentation.

    .venv/bin/python benchmarks/head_distances_on_validation.py 0.03 MODEL.pt [MODEL.pt ...]
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import torch

from cryoshot.data.synthetic import VALIDATION_OFFSET, PoolConfig, VolumePool
from cryoshot.models.loading import load_model
from cryoshot.train.loop import embed_pool_rotations


def main() -> None:
    snr, paths = float(sys.argv[1]), sys.argv[2:]
    torch.set_num_threads(1)
    pool = VolumePool(PoolConfig(n_procedural=30, procedural_offset=VALIDATION_OFFSET, bundled=[],
                                 items_per_class=20, snrs=[snr], seed=5000), progress=False)  # fmt: skip
    for p in paths:
        net, _ = load_model(p)
        z = embed_pool_rotations(net, pool, torch.device("cpu"), contextlib.nullcontext, rotations=[0], progress=False)[
            0
        ]
        for shot in (5, 1):
            acc = {k: [] for k in ("d", "d*", "d+d*")}
            ts, tq = torch.arange(5).repeat_interleave(shot), torch.arange(5).repeat_interleave(15)
            for e in range(300):
                cls, its, _ = pool.episode_plan(5, shot, 15, np.random.default_rng([42, shot, e]), augment=False)
                ze = z[torch.as_tensor(cls), torch.as_tensor(its)]
                with torch.no_grad():
                    for k in acc:
                        pred = net.distances(ze[: 5 * shot], ts, ze[5 * shot :], 5, k).argmin(1)
                        acc[k].append((pred == tq).float().mean().item())
            cells = {k: f"{np.mean(v):.4f} ± {1.96 * np.std(v) / np.sqrt(len(v)):.4f}" for k, v in acc.items()}
            print(p, f"SNR {snr} {shot}-shot", cells, flush=True)


if __name__ == "__main__":
    main()
