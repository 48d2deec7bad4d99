"""Choose the K = 1 unknown-threshold scale on held-out *training-distribution* classes.

The 30 procedural validation classes (never trained on, never the benchmark's novel
structures), SNR 0.05, 40 items each, 100 seeded episodes of 4 known classes (one
support each) + 4 absent ones, 40 queries from each side. Prints, for each ratio
r of the query's smallest distance to the median nearest-other-class distance of the
supports, how many known and absent queries exceed it. ``ONE_SHOT_SCALE`` in
``cryoshot.fewshot.openset`` is the r with about 1% of known queries rejected,
divided by the default margin 1.5.

    .venv/bin/python benchmarks/tune_one_shot_threshold.py [--model default]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cryoshot.data.synthetic import VALIDATION_OFFSET
from cryoshot.evaluate.metrics import auroc
from cryoshot.fewshot.methods import make_method, scores_and_distances
from cryoshot.fewshot.openset import ONE_SHOT_SCALE, one_shot_threshold
from cryoshot.models.loading import load_model
from cryoshot.pretrained import resolve_model
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="default")
    ap.add_argument("--method", default="protonet-ce")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    structs = load_structures([f"procedural:{VALIDATION_OFFSET + i}" for i in range(30)], 10.0, 40)
    m = make_method(args.method, load_model(resolve_model(args.model))[0])
    b = SubtomogramSimulator(structs, SubtomogramConfig(snr=0.05, seed=31)).simulate(range(40 * 30), with_clean=False)
    labels, z = b.labels, m.embed(b.volumes, 10.0, progress=False)
    rk, ra, aucs = [], [], []
    for e in range(100):
        rng = np.random.default_rng([5, e])
        classes = rng.permutation(30)
        known, absent = classes[:4], classes[4:8]
        sup = np.array([rng.choice(np.nonzero(labels == c)[0]) for c in known])
        rest = np.setdiff1d(np.arange(len(labels)), sup)
        qk = rng.choice(rest[np.isin(labels[rest], known)], 40, replace=False)
        qa = rng.choice(rest[np.isin(labels[rest], absent)], 40, replace=False)
        ts = torch.as_tensor(np.searchsorted(np.sort(known), labels[sup]))
        with torch.no_grad():
            _, d = scores_and_distances(m, z[sup], ts, z[np.concatenate([qk, qa])], 4)
            median_nearest = one_shot_threshold(m, z[sup], ts, 4, margin=1.0) / ONE_SHOT_SCALE
        dk, da = d[:40].min(1).values.numpy(), d[40:].min(1).values.numpy()
        rk.append(dk / median_nearest)
        ra.append(da / median_nearest)
        aucs.append(auroc(da, dk))
    rk, ra = np.concatenate(rk), np.concatenate(ra)
    print(
        f"AUROC {np.mean(aucs):.3f}; known-query ratio quantiles 50/90/95/99%: {np.quantile(rk, [0.5, 0.9, 0.95, 0.99])}"
    )
    print("| ratio r | known -> unknown | absent -> unknown |\n|---|---|---|")
    for r in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2):
        print(f"| {r} | {np.mean(rk > r):.3f} | {np.mean(ra > r):.3f} |")


if __name__ == "__main__":
    main()
