"""Automatic k by over-clustering and merging (``embedding/merge.py``): its settings, chosen on training structures.

The 12 sets of ``choose_k_rule.py`` (the 8 training maps, never the novel ones; view sets of
6 views and mixtures of 3 structures x 3 views, SNR 0.1 and 0.02). For each set: the elbow's
k, the refinement at that k (the shipped path before merging), and the refinement at
k_over = max(2 k, k + 4) followed by merging at several ``rho``; k and ARI for each, and the
median class reliability that gates the rule.

    cd benchmarks && ../.venv/bin/python choose_merge_k.py [--over 2]
    cd benchmarks && ../.venv/bin/python choose_merge_k.py --large   # choose_refinement.py's 6,000-image sets

``--over F`` over-clusters at max(F k, k + 2 F) (capped at 5 images per class), F = 3 by default (the shipped one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from choose_k_rule import dev_stars  # noqa: E402  (benchmarks/ on sys.path when run as a script)

from cryoshot.data.particles2d import prepare_images
from cryoshot.embedding.cluster import agreement, elbow_curve, kmeans, kneedle, reduce_dimensions
from cryoshot.embedding.merge import merge_classes
from cryoshot.embedding.mra import mra_classify
from cryoshot.embedding.workflow import ClusterConfig, _ctf_params, embed_images, over_cluster
from cryoshot.io.images2d import load_particle_images
from cryoshot.models.siamese2d import load_siamese
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.utils.threads import configure_threads

RHOS = (0.8, 0.85, 0.9, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--root", type=Path, default=Path("../runs/choose_k"))
    ap.add_argument("--over", type=float, default=3.0, help="over-clustering factor F")
    ap.add_argument("--large", action="store_true", help="the 6,000-image training sets of choose_refinement.py")
    args = ap.parse_args()
    configure_threads()
    net, _ = load_siamese(resolve_siamese_model(args.model))
    cc = ClusterConfig()
    mcfg = cc.refine_mra()  # the shipped refinement's settings (seed 0)
    rows = []
    stars = dev_stars(args.root, args.large)
    for star in stars:
        p = load_particle_images(star, label_column="rlnClassNumber", progress=False)
        k_true = len(np.unique(p.labels))
        raw = prepare_images(p.images, p.pixel_size_A, p.box, p.pixel_size_A, _ctf_params(p, "auto"))
        f = reduce_dimensions(embed_images(net, raw, progress=False), 50)
        ks, inertia = elbow_curve(f, 20)
        k_elbow = kneedle(ks, inertia)
        base = mra_classify(raw, k_elbow, mcfg, progress=False, init_labels=kmeans(f, k_elbow)[0])
        over, aligned = over_cluster(raw, f, k_elbow, mcfg, 0, False, factor=args.over)
        k_over = len(over.averages)
        row = {
            "set": star.parent.name,
            "k_true": k_true,
            "elbow": (k_elbow, agreement(p.labels, base.labels)["ari"]),
        }
        for rho in RHOS:
            mg = merge_classes(aligned, over.labels, k_over, rho=rho, min_reliability=0.0)
            row[rho] = (mg.k, agreement(p.labels, mg.groups[over.labels])["ari"])
            row["reliability"] = float(np.median(mg.reliability))
        rows.append(row)
        print(
            f"{row['set']:<28} true {k_true}, median reliability {row['reliability']:.3f}: "
            + "; ".join(f"{n} k {row[n][0]} ARI {row[n][1]:.3f}" for n in ("elbow", *RHOS)),
            flush=True,
        )
    print("\nmerge everywhere, or only where the median reliability is at least 0.96 (the elbow elsewhere):")
    for rho in RHOS:
        for gate in (0.0, 0.96):
            pick = [r[rho] if r["reliability"] >= gate else r["elbow"] for r in rows]
            dk = np.abs([k - r["k_true"] for (k, _), r in zip(pick, rows, strict=True)])
            print(
                f"  rho {rho}, gate {gate}: k within ±1 on {np.mean(dk <= 1):.0%}, mean |k - k_true| {dk.mean():.2f}, "
                f"mean ARI {np.mean([a for _, a in pick]):.3f}"
            )
    dk = np.abs([r["elbow"][0] - r["k_true"] for r in rows])
    print(
        f"  elbow only: k within ±1 on {np.mean(dk <= 1):.0%}, mean |k - k_true| {dk.mean():.2f}, "
        f"mean ARI {np.mean([r['elbow'][1] for r in rows]):.3f}"
    )


if __name__ == "__main__":
    main()
