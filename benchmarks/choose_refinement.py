"""How much MRA refinement ``cryoshot cluster`` should run after the embedding, decided on training structures.

Sets of a realistic size (6,000 images of 64² at 5 Å/px, SNR 0.1, per-particle CTF, random
in-plane rotation), made of the bundled training maps (never the novel ones): two view sets
(one structure x 12 views x 500) and one mixture (4 structures x 4 views x 375). For each
refinement setting: ARI with the true k and seconds of the whole ``cluster_images`` call
(images in memory), beside MRA from random subsets.

    .venv/bin/python benchmarks/choose_refinement.py [--root DIR] [--no-mra]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_cluster2d import make_set  # noqa: E402  (benchmarks/ on sys.path when run as a script)

from cryoshot.embedding.mra import MRAConfig
from cryoshot.embedding.workflow import ClusterConfig, cluster_images
from cryoshot.io.images2d import load_particle_images
from cryoshot.models.siamese2d import load_siamese
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.simulate.splits import TRAIN_STRUCTURES
from cryoshot.utils.threads import configure_threads

SETTINGS = {  # name: (refine iterations, work box px, coarse-to-fine)
    "embedding alone": (0, 32, False),
    "refine 2 @ 32 px": (2, 32, False),
    "refine 5 @ 32 px": (5, 32, False),
    "refine 10 @ 32 px": (10, 32, False),
    "refine 3 @ 64 px": (3, 64, False),
    "refine 10 @ 64 px": (10, 64, False),
    "refine 2 @ 32->64 px": (2, 32, True),
    "refine 3 @ 32->64 px": (3, 32, True),
    "refine 5 @ 32->64 px": (5, 32, True),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("runs/choose_refinement"))
    ap.add_argument("--no-mra", action="store_true")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names from SETTINGS")
    args = ap.parse_args()
    configure_threads()
    args.root.mkdir(parents=True, exist_ok=True)
    net, _ = load_siamese(resolve_siamese_model("default"))
    sets = [((TRAIN_STRUCTURES[2],), 12, 500), ((TRAIN_STRUCTURES[6],), 12, 500), (TRAIN_STRUCTURES[:4], 4, 375)]
    table: dict[str, list[tuple[float, float]]] = {}
    for structs, views, per in sets:
        p = load_particle_images(make_set(args.root, structs, views, per, 0.1), label_column="rlnClassNumber",
                                 progress=False)  # fmt: skip
        k = len(np.unique(p.labels))
        names = [s for s in args.settings.split(",") if s]
        for name in names + ([] if args.no_mra else ["MRA (random subsets)"]):
            if name in SETTINGS:
                it, box, fine = SETTINGS[name]
                cfg = ClusterConfig(k=k, refine_iterations=it, refine_box_px=box, refine_fine=fine)
            else:
                cfg = ClusterConfig(k=k, method="mra", mra=MRAConfig())
            t = time.perf_counter()
            res, _ = cluster_images(p, cfg, net=net if cfg.method == "siamese" else None, progress=False)
            sec = time.perf_counter() - t
            table.setdefault(name, []).append((res.ari, sec))
            print(
                f"{'-'.join(structs)} x {views} views (k {k}): {name:<22} ARI {res.ari:.3f}  {sec:6.1f} s", flush=True
            )
    print(f"\n{'setting':<24} " + "  ".join(f"{'-'.join(s[:2])}{'..' if len(s) > 2 else ''}"[:14].rjust(14)
                                        for s, _, _ in sets) + "   mean ARI  mean s")  # fmt: skip
    for name, v in table.items():
        print(f"{name:<24} " + "  ".join(f"{a:.3f} {s:6.1f}s" for a, s in v)
              + f"   {np.mean([a for a, _ in v]):.3f}  {np.mean([s for _, s in v]):6.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
