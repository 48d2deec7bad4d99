"""Robustness of a trained model to data it was not simulated like (domain shift).

The accuracy benchmark's data come from the same simulator, with the same imaging
settings, as the training data. Data from another lab (or another simulator) will
differ. This benchmark keeps the 8 novel structures and changes one setting at a
time -- missing wedge, CTF, defocus, B-factor, shifts, SNR convention, the
tilt-series + WBP path, per-particle wedge and B-factor, neighbouring particles at the
box edge, flipped contrast, all of these at once -- and adds an independent naive
simulator (the map rotated in real space by scipy, white Gaussian noise, no CTF and no
wedge) and densities rendered from atomic models by gemmi instead of the bundled maps
(the novel structures that have a PDB file in ../shared/structures/pdb, plus 5gjv, which
no model saw). For each it prints 5-way 5-shot and 1-shot accuracy over 100 seeded
episodes (SNR 0.05), one column pair per model, every model on the same data and episodes.

    .venv/bin/python benchmarks/bench_robustness.py [--models LABEL=METHOD:PATH[@ROTATIONS] ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import affine_transform
from scipy.spatial.transform import Rotation

from cryoshot.evaluate.fewshot import evaluate_episodes
from cryoshot.fewshot.methods import make_method
from cryoshot.models.loading import load_model
from cryoshot.pretrained import resolve_model
from cryoshot.simulate.optics import Microscope
from cryoshot.simulate.splits import NOVEL_STRUCTURES
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator

BENCH_SEED = 777  # as bench_fewshot: never used in training

BASE = SubtomogramConfig(snr=0.05, seed=BENCH_SEED)
VARIANTS = {
    "as trained (reference)": {},
    "wedge ±45°": dict(tilt_min_deg=-45.0, tilt_max_deg=45.0),
    "wedge -50..+65° (asymmetric)": dict(tilt_min_deg=-50.0, tilt_max_deg=65.0),
    "no missing wedge": dict(use_wedge=False),
    "no CTF": dict(use_ctf=False),
    "defocus 1-2 µm": dict(defocus_min_um=1.0, defocus_max_um=2.0),
    "defocus 5-8 µm": dict(defocus_min_um=5.0, defocus_max_um=8.0),
    "B-factor 500 Å²": dict(microscope=Microscope(b_factor_A2=500.0)),
    "shifts up to 5 px": dict(max_shift_px=5.0),
    "no dose weighting": dict(use_dose=False),
    "SNR per projection": dict(snr_convention="projection"),
    "tilt series + WBP": dict(method="tiltseries"),
    "wedge ±45..75° per particle (asymmetric)": dict(tilt_jitter_deg=15.0),
    "B-factor 0-300 Å² per particle": dict(b_factor_max_A2=300.0),
    "neighbours at the box edge (mean 1)": dict(neighbours=1.0),
    "neighbours at the box edge (mean 3)": dict(neighbours=3.0),
    "protein dark (contrast flipped)": dict(invert=True),
    "all at once: shifts 5 px, neighbours 1, wedge ±15°, B 0-300, 30% tilt series": dict(
        max_shift_px=5.0, neighbours=1.0, tilt_jitter_deg=15.0, b_factor_max_A2=300.0, tiltseries_fraction=0.3
    ),
}
PDB_DIR = Path(__file__).resolve().parents[2] / "shared" / "structures" / "pdb"
PDB_ROW = "atomic models via gemmi (1bxn 1u6g 3cf3 3gl1 3qm1 + unseen 5gjv)"
PDB_IDS = ("1bxn", "1u6g", "3cf3", "3gl1", "3qm1", "5gjv")


def naive_simulator(structs, n: int, snr: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Map rotated in real space (trilinear) about the box centre + white noise at ``snr`` (box variance ratio)."""
    rng = np.random.default_rng([seed, 99])
    d = structs[0].density.shape[-1]
    c = (d - 1) / 2.0
    vols, labels = np.empty((n, d, d, d), np.float32), np.arange(n) % len(structs)
    for i in range(n):
        m = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
        v = affine_transform(structs[labels[i]].density, m, offset=c - m @ np.full(3, c), order=1)
        v = v - v.mean()
        noise_std = np.sqrt(v.var() / snr)
        vols[i] = v + noise_std * rng.standard_normal(v.shape)
    return vols, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="*", default=["shipped=protonet-ce:default"],
                    help="LABEL=METHOD:PATH[@ROTATIONS] (PATH 'default': the shipped model)")  # fmt: skip
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--only", nargs="*", default=None, help="variant names (substrings) to run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    methods = {}
    for spec in args.models:
        label, rest = spec.split("=", 1)
        method, path = rest.split(":", 1)
        path, _, rot = path.partition("@")  # PATH@R: R wedge-preserving rotations averaged (default: the default)
        net = load_model(resolve_model(path))[0]
        methods[label] = (method, make_method(method, net, seed=0, rotations=int(rot) if rot else None))
    structs = load_structures(list(NOVEL_STRUCTURES), 10.0, 40)
    n = args.per_class * len(structs)
    print(f"\n## Robustness: SNR 0.05, 8 novel structures, {args.episodes} episodes, {time.strftime('%Y-%m-%d')}\n")
    print("| data | " + " | ".join(f"{lab} 5-shot | {lab} 1-shot" for lab in methods) + " | simulate s |")
    print("|---|" + "---|---|" * len(methods) + "---|")
    rows = list(VARIANTS.items()) + [("naive simulator (scipy rotation + white noise)", None), (PDB_ROW, "pdb")]
    for name, change in rows:
        if args.only and not any(s in name for s in args.only):
            continue
        t = time.perf_counter()
        if change is None:
            vols, labels = naive_simulator(structs, n, BASE.snr, BENCH_SEED)
        elif change == "pdb":
            models = load_structures([str(PDB_DIR / f"{i}.pdb") for i in PDB_IDS], 10.0, 40)
            b = SubtomogramSimulator(models, BASE).simulate(range(args.per_class * len(models)), with_clean=False)
            vols, labels = b.volumes, b.labels
        else:
            b = SubtomogramSimulator(structs, replace(BASE, **change)).simulate(range(n), with_clean=False)
            vols, labels = b.volumes, b.labels
        sim_s = time.perf_counter() - t
        cells = []
        for method, m in methods.values():
            z = m.embed(vols, 10.0, progress=False)
            for shot in (5, 1):
                r = evaluate_episodes(m, z, labels, name=method, way=5, shot=shot, query=15,
                                      episodes=args.episodes, seed=0, progress=False)  # fmt: skip
                cells.append(f"{r['accuracy_mean']:.3f} ± {r['accuracy_ci95']:.3f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {sim_s:.0f} |", flush=True)


if __name__ == "__main__":
    main()
