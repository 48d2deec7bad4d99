"""Which automatic-k rule to ship, decided on structures the Siamese model trained on (never the novel ones).

Sets like the benchmark's (view sets: one structure x 6 views; mixtures: 3 structures x 3
views; SNR 0.1 and 0.02), but of the 8 bundled training maps, so the benchmark's novel
structures play no part in the choice. For each rule: how often k is within ±1 of the
truth, and the mean |k - k_true|.

    .venv/bin/python benchmarks/choose_k_rule.py [--model PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_cluster2d import make_set  # noqa: E402  (benchmarks/ on sys.path when run as a script)
from sklearn.metrics import calinski_harabasz_score, silhouette_score

from cryoshot.data.particles2d import prepare_images
from cryoshot.embedding.cluster import elbow_curve, kmeans, kneedle, reduce_dimensions
from cryoshot.embedding.workflow import _ctf_params, embed_images
from cryoshot.io.images2d import load_particle_images
from cryoshot.models.siamese2d import load_siamese
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.simulate.splits import TRAIN_STRUCTURES
from cryoshot.utils.threads import configure_threads

# the 12 sets: 4 view sets (one training map x 6 views x 100) and 2 mixtures (3 maps x 3 views x 70), at each SNR
DEV_SETS = [((s,), 6, 100) for s in TRAIN_STRUCTURES[:4]] + [
    (tuple(TRAIN_STRUCTURES[4:7]), 3, 70),
    ((TRAIN_STRUCTURES[0], TRAIN_STRUCTURES[5], TRAIN_STRUCTURES[7]), 3, 70),
]
DEV_SNRS = (0.1, 0.02)


def dev_stars(root: Path, large: bool = False) -> list[Path]:
    """particles.star of each training-map set: the 12 above (made in ``root`` when missing), or with ``large``
    the three 6,000-image sets ``choose_refinement.py`` made."""
    if large:
        stars = sorted(Path("../runs/choose_refinement").glob("*/particles.star"))
        if not stars:
            raise SystemExit("run choose_refinement.py first: it makes the 6,000-image sets")
        return stars
    root.mkdir(parents=True, exist_ok=True)
    return [make_set(root, structs, views, per, snr) for snr in DEV_SNRS for structs, views, per in DEV_SETS]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--root", type=Path, default=Path("runs/choose_k"))
    args = ap.parse_args()
    configure_threads()
    args.root.mkdir(parents=True, exist_ok=True)
    net, _ = load_siamese(resolve_siamese_model(args.model))
    res: dict[str, list[int]] = {}
    for star in dev_stars(args.root):
        p = load_particle_images(star, label_column="rlnClassNumber", progress=False)
        k_true = len(np.unique(p.labels))
        x = prepare_images(p.images, p.pixel_size_A, net.cfg.box_px, net.cfg.pixel_size_A, _ctf_params(p, "auto"))
        f = reduce_dimensions(embed_images(net, x, progress=False), 50)
        ks, inertia = elbow_curve(f, 20)
        labs = {int(k): kmeans(f, int(k))[0] for k in ks[1:]}
        picks = {
            "log-kneedle": kneedle(ks, inertia, "log-kneedle"),
            "kneedle": kneedle(ks, inertia, "kneedle"),
            "last-drop": kneedle(ks, inertia, "last-drop"),
            "silhouette": max(labs, key=lambda k: silhouette_score(f, labs[k])),
            "calinski-harabasz": max(labs, key=lambda k: calinski_harabasz_score(f, labs[k])),
        }
        for rule, k in picks.items():
            res.setdefault(rule, []).append(k - k_true)
        print(f"{star.parent.name:<32} true {k_true}: " + ", ".join(f"{r} {k}" for r, k in picks.items()), flush=True)
    for rule, d in res.items():
        d = np.abs(d)
        print(f"{rule:<18} within ±1: {np.mean(d <= 1):.0%}  mean |k - k_true| {d.mean():.2f}")


if __name__ == "__main__":
    main()
