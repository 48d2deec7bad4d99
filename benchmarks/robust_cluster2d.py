"""Robustness of 2D classification: view sets simulated unlike the benchmark's (and the training's centre).

``shifted`` (the default): novel structures (1bxn, 3cf3, 4v4r) x 6 views x 100 images at SNR
0.1, with larger shifts (3 px), wider views (8° jitter), defocus 0.8-4 µm, B-factor 150 Å²,
amplitude contrast 0.1; clustered with the true k, phase-flipped (``--ctf auto``) or not
(``none``), with the embedding alone (``--refine 0``) and the default (``--refine 3``,
coarse-to-fine).

``detector``: the benchmark's view sets (1bxn, 3cf3, 4v4r, 6qzp x 6 views x 100 images, SNR
0.1, shifts up to 1 px, 5° jitter, defocus 1-3 µm), each twice from the same seed: with white
noise, and with half the noise variance structural (imaged through the CTF, as ice and solvent
are) and a detector MTF of 0.6 at Nyquist. The default with the true k and with ``--k auto``,
and MRA with the true k; pairs from one run.

    .venv/bin/python benchmarks/robust_cluster2d.py [--sets shifted detector]
"""

import argparse
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

ROOT = Path("runs/bench_cluster2d/robust")


def view_set(name: str, structure: str, cfg: ProjectionConfig):
    out = ROOT / name
    if not (out / "particles.star").exists():
        sim = ProjectionSimulator(load_structures([structure], 5.0, 64), cfg)
        write_projections(sim, 600, out, progress=False)
    return load_particle_images(out / "particles.star", label_column="rlnClassNumber", progress=False)


def shifted(net) -> None:
    for s in ("1bxn", "3cf3", "4v4r"):
        cfg = ProjectionConfig(box_px=64, pixel_size_A=5.0, n_views=6, snr=0.1, inplane_rotation=True,
                               view_jitter_deg=8.0, max_shift_px=3.0, defocus_min_um=0.8, defocus_max_um=4.0,
                               microscope=Microscope(amplitude_contrast=0.1, b_factor_A2=150.0), seed=7777)  # fmt: skip
        p = view_set(f"{s}_shifted", s, cfg)
        row = [s]
        for ctf in ("auto", "none"):
            for refine in (0, 3):
                r, _ = cluster_images(p, ClusterConfig(k=6, ctf=ctf, refine_iterations=refine), net=net, progress=False)
                row.append(f"ctf {ctf} refine {refine}: {r.ari:.3f}")
        t = time.time()
        r, _ = cluster_images(p, ClusterConfig(k=6, method="mra"), progress=False)
        row.append(f"MRA: {r.ari:.3f} ({time.time() - t:.0f} s)")
        print(" | ".join(row), flush=True)


def detector(net) -> None:
    for s in ("1bxn", "3cf3", "4v4r", "6qzp"):
        for tag, over in (("white", {}), ("detector", dict(structural_noise=0.5, mtf_nyquist=0.6))):
            cfg = ProjectionConfig(box_px=64, pixel_size_A=5.0, n_views=6, snr=0.1, inplane_rotation=True,
                                   view_jitter_deg=5.0, max_shift_px=1.0, seed=7878, **over)  # fmt: skip
            p = view_set(f"{s}_{tag}", s, cfg)
            row = [f"{s} {tag:8s}"]
            for k in (6, None):
                t = time.time()
                r, _ = cluster_images(p, ClusterConfig(k=k), net=net, progress=False)
                row.append(f"default, k {'true' if k else 'auto'}: {r.ari:.3f} (k {r.k}, {time.time() - t:.1f} s)")
            t = time.time()
            r, _ = cluster_images(p, ClusterConfig(k=6, method="mra"), progress=False)
            row.append(f"MRA: {r.ari:.3f} ({time.time() - t:.1f} s)")
            print(" | ".join(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", choices=("shifted", "detector"), default=["shifted"])
    a = ap.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    net, _ = load_siamese(resolve_siamese_model("default"))
    for name in a.sets:
        {"shifted": shifted, "detector": detector}[name](net)


if __name__ == "__main__":
    main()
