"""Robustness of 2D classification: view sets simulated unlike the benchmark's (and the training's centre).

Novel structures (1bxn, 3cf3, 4v4r) x 6 views x 100 images at SNR 0.1, with larger shifts
(3 px), wider views (8° jitter), defocus 0.8-4 µm, B-factor 150 Å², amplitude contrast 0.1;
clustered with the true k, phase-flipped (``--ctf auto``) or not (``none``), with the
embedding alone (``--refine 0``) and the default (``--refine 3``, coarse-to-fine).

    .venv/bin/python benchmarks/robust_cluster2d.py
"""

import time
from pathlib import Path

from cryoshot.embedding.workflow import ClusterConfig, cluster_images
from cryoshot.io.images2d import load_particle_images
from cryoshot.models.siamese2d import load_siamese
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.simulate.datasets import write_projections
from cryoshot.simulate.optics import Microscope
from cryoshot.simulate.projections import ProjectionConfig, ProjectionSimulator
from cryoshot.simulate.structures import load_structures

net, _ = load_siamese(resolve_siamese_model("default"))
root = Path("runs/bench_cluster2d/robust")
root.mkdir(parents=True, exist_ok=True)
for s in ("1bxn", "3cf3", "4v4r"):
    out = root / f"{s}_shifted"
    if not (out / "particles.star").exists():
        cfg = ProjectionConfig(
            box_px=64,
            pixel_size_A=5.0,
            n_views=6,
            snr=0.1,
            inplane_rotation=True,
            view_jitter_deg=8.0,
            max_shift_px=3.0,
            defocus_min_um=0.8,
            defocus_max_um=4.0,
            microscope=Microscope(amplitude_contrast=0.1, b_factor_A2=150.0),
            seed=7777,
        )
        sim = ProjectionSimulator(load_structures([s], 5.0, 64), cfg)
        write_projections(sim, 600, out, progress=False)
    p = load_particle_images(out / "particles.star", label_column="rlnClassNumber", progress=False)
    row = [s]
    for ctf in ("auto", "none"):
        for refine in (0, 3):
            r, _ = cluster_images(p, ClusterConfig(k=6, ctf=ctf, refine_iterations=refine), net=net, progress=False)
            row.append(f"ctf {ctf} refine {refine}: {r.ari:.3f}")
    t = time.time()
    r, _ = cluster_images(p, ClusterConfig(k=6, method="mra"), progress=False)
    row.append(f"MRA: {r.ari:.3f} ({time.time() - t:.0f} s)")
    print(" | ".join(row), flush=True)
