"""With a given k (``--k N``): start from k-means at k, or over-cluster and merge down to k? Training structures.

With ``--k auto`` the default over-clusters at max(3 k, k + 6), refines, and merges the classes
whose aligned averages agree (``embedding/merge.py``); on the novel benchmark's 6,000-image sets
that beat the refinement started from k-means at the *true* k on two of three sets. This script
asks whether the same start helps when k is given: over-cluster at max(3 k, k + 6), refine,
merge by average linkage until exactly k classes remain, then refine at k from there; where the
classes are too noisy to judge (median reliability below 0.96, as for ``--k auto``), or always.

Sets: the 12 of ``choose_k_rule.py`` (the 8 training maps; view sets of 6 views and mixtures of
3 structures x 3 views, SNR 0.1 and 0.02) and, with ``--large``, the three 6,000-image sets of
``choose_refinement.py`` (12 or 16 classes, SNR 0.1). ARI against the true classes, and seconds.

    cd benchmarks && ../.venv/bin/python choose_merge_to_k.py [--large]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from choose_k_rule import dev_stars  # noqa: E402  (benchmarks/ on sys.path when run as a script)
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from cryoshot.data.particles2d import prepare_images
from cryoshot.embedding.cluster import agreement, kmeans, reduce_dimensions
from cryoshot.embedding.merge import MIN_RELIABILITY, merge_classes
from cryoshot.embedding.mra import mra_classify
from cryoshot.embedding.workflow import ClusterConfig, _ctf_params, embed_images, over_cluster
from cryoshot.io.images2d import load_particle_images
from cryoshot.models.siamese2d import load_siamese
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.utils.threads import configure_threads


def merge_to(sim: np.ndarray, k: int) -> np.ndarray:
    """(K,) group 0..k-1 of each over-clustered class: average linkage on 1 - ``sim`` (K, K), cut at k groups."""
    dist = np.clip(1.0 - sim, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    return fcluster(linkage(squareform(dist, checks=False), "average"), t=k, criterion="maxclust") - 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("../runs/choose_k"))
    ap.add_argument("--large", action="store_true", help="the 6,000-image training sets of choose_refinement.py")
    args = ap.parse_args()
    configure_threads()
    net, _ = load_siamese(resolve_siamese_model("default"))
    cc = ClusterConfig()
    mcfg = cc.refine_mra()  # the shipped refinement's settings (seed 0)
    stars = dev_stars(args.root, args.large)
    res = {"k-means at k, refined (shipped)": [], "merged to k": [], "merged to k, refined": [],
           "merged to k, refined, gated": []}  # fmt: skip
    for star in stars:
        p = load_particle_images(star, label_column="rlnClassNumber", progress=False)
        k = len(np.unique(p.labels))
        raw = prepare_images(p.images, p.pixel_size_A, p.box, p.pixel_size_A, _ctf_params(p, "auto"))
        t0 = time.perf_counter()
        f = reduce_dimensions(embed_images(net, raw, progress=False), 50)
        t_embed = time.perf_counter() - t0
        t = time.perf_counter()
        base = mra_classify(raw, k, mcfg, progress=False, init_labels=kmeans(f, k)[0])
        t_base = time.perf_counter() - t + t_embed
        t = time.perf_counter()
        over, aligned = over_cluster(raw, f, k, mcfg, 0, False)
        k_over = len(over.averages)
        mg = merge_classes(aligned, over.labels, k_over, min_reliability=0.0)
        merged = merge_to(mg.similarity, k)[over.labels]
        t_merge = time.perf_counter() - t + t_embed
        t = time.perf_counter()
        ref = mra_classify(raw, k, mcfg, progress=False, init_labels=merged)
        t_ref = time.perf_counter() - t + t_merge
        reliable = float(np.median(mg.reliability)) >= MIN_RELIABILITY
        rows = {
            "k-means at k, refined (shipped)": (agreement(p.labels, base.labels)["ari"], t_base),
            "merged to k": (agreement(p.labels, merged)["ari"], t_merge),
            "merged to k, refined": (agreement(p.labels, ref.labels)["ari"], t_ref),
        }
        rows["merged to k, refined, gated"] = rows["merged to k, refined"] if reliable else (
            rows["k-means at k, refined (shipped)"][0], t_merge + t_base - t_embed)  # fmt: skip
        for name, v in rows.items():
            res[name].append(v)
        print(f"{star.parent.name:<32} k {k}, over {k_over}, reliability {np.median(mg.reliability):.3f}: "
              + "; ".join(f"{n} {a:.3f} ({s:.1f} s)" for n, (a, s) in rows.items()), flush=True)  # fmt: skip
    print(f"\n{'start':36s} {'mean ARI':>9s} {'mean s':>7s}   per set")
    for name, v in res.items():
        a = np.array(v)
        print(f"{name:36s} {a[:, 0].mean():9.3f} {a[:, 1].mean():7.1f}   " + " ".join(f"{x:.3f}" for x in a[:, 0]))


if __name__ == "__main__":
    main()
