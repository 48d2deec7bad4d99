"""How well a Siamese view network tells a target from proteins of its own size, on structures it never saw.

The picker's view opinion is a candidate's mean cosine to its 3 most similar exemplars
(``picking.views.view_scores``); what limits it is telling the target from other proteins
(docs/benchmarks.md, "Where the second simulator's gap comes from"). The dev sets use training
structures, which every view network has seen. This measure uses held-out procedural
pseudo-molecules (indices from ``--offset``, outside both the training pool and the training's
validation set) instead:

for each of ``--targets`` structures: 15 exemplar images of random views; 60 query images of the
target and 60 of the 3 structures closest to it in size (90%-mass radius), 20 each, plus 60 of 3
random other structures. Every image is drawn as the network's training images are (CTF, noise,
shift, in-plane rotation), with neighbours and ice texture in half of them, at SNR 0.05-0.3
(a micrograph at SNR 0.01-0.02 binned to 5 Å/px). The score is the view opinion; printed: the
AUC of target against size-matched distractors and against random ones, averaged over targets.

    cd benchmarks && ../.venv/bin/python view_distractor_auc.py [MODEL.pt ...]

With no model, the shipped network. Each model sees the same images (a pure function of ``--seed``).

A property of the network, not a forecast of the picker: on 2026-12-01 a network 0.027 AUC
better here was no better on the picker's dev sets (docs/benchmarks.md, "The view network
trained on batches of proteins of one size"). Choose on ``choose_pick_view_model.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from sklearn.metrics import roc_auc_score

from cryoshot.data.projection_triplets import ProjectionTriplets, TripletDataConfig
from cryoshot.models.siamese2d import load_siamese
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.train.siamese import embed_batches

N_EXEMPLARS, N_QUERY, N_NEAR = 15, 60, 3


def image_sets(n_targets: int, offset: int, seed: int) -> list[dict]:
    """For each target: exemplar, target, size-matched and random-distractor images (N, 1, 64, 64) tensors."""
    cfg = TripletDataConfig(snr_range=(0.05, 0.3), p_textured=0.5, p_neighbours=0.5)
    pool = ProjectionTriplets([f"procedural:{offset}-{offset + n_targets}"], cfg, seed=seed)
    radii = pool.radii_px
    sets = []
    for t in range(n_targets):
        rng = np.random.default_rng([seed, t])
        others = np.array([s for s in range(n_targets) if s != t])
        near = others[np.argsort(np.abs(radii[others] - radii[t]))[:N_NEAR]]
        far = rng.choice(others, N_NEAR, replace=False)
        groups = {"exemplars": np.full(N_EXEMPLARS, t), "target": np.full(N_QUERY, t),
                  "near": np.repeat(near, N_QUERY // N_NEAR), "random": np.repeat(far, N_QUERY // N_NEAR)}  # fmt: skip
        out = {"radius": radii[t], "near_radii": radii[near]}
        for name, structure in groups.items():
            views = Rotation.random(len(structure), random_state=rng)
            img = pool.render(structure, views, rng, np.random.default_rng([seed, t, 1]),
                              np.random.default_rng([seed, t, 2]))  # fmt: skip
            out[name] = torch.from_numpy(img)[:, None]
        sets.append(out)
    return sets


def aucs(net, sets: list[dict], top: int = 3) -> np.ndarray:
    """(targets, 2) AUC of the view opinion: target against size-matched, against random distractors."""
    rows = []
    for s in sets:
        ex = embed_batches(net, s["exemplars"]).double()

        def score(name, ex=ex, s=s):
            c = embed_batches(net, s[name]).double() @ ex.T
            return torch.sort(c, dim=1).values[:, -top:].mean(1).numpy()

        t = score("target")
        row = []
        for other in ("near", "random"):
            o = score(other)
            row.append(roc_auc_score(np.r_[np.ones(len(t)), np.zeros(len(o))], np.r_[t, o]))
        rows.append(row)
    return np.array(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="Siamese files (default: the shipped network)")
    ap.add_argument("--targets", type=int, default=40)
    ap.add_argument("--offset", type=int, default=960_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    t0 = time.time()
    sets = image_sets(args.targets, args.offset, args.seed)
    print(f"{args.targets} held-out structures (procedural:{args.offset}-{args.offset + args.targets}), "
          f"images drawn in {time.time() - t0:.0f} s")  # fmt: skip
    gap = np.mean([np.abs(s["near_radii"] - s["radius"]).mean() / s["radius"] for s in sets])
    print(f"size-matched distractors differ in radius by {100 * gap:.1f}% on average")
    models = args.models or [str(resolve_siamese_model("default"))]
    results = {}
    for path in models:
        net = load_siamese(path)[0]
        a = aucs(net, sets)
        results[path] = a
        print(f"{path}: AUC target vs size-matched {a[:, 0].mean():.3f} (sem {a[:, 0].std() / np.sqrt(len(a)):.3f}), "
              f"vs random {a[:, 1].mean():.3f}")  # fmt: skip
    if len(models) > 1:
        base = results[models[0]]
        for path in models[1:]:
            d = results[path][:, 0] - base[:, 0]
            print(f"{path} - {models[0]}: size-matched AUC {d.mean():+.3f} (sem {d.std() / np.sqrt(len(d)):.3f}), "
                  f"better on {(d > 0).sum()} of {len(d)} targets")  # fmt: skip


if __name__ == "__main__":
    main()
