"""Picking on micrographs from a second, independent simulator (``othersim.py``): atoms, a phase object, counts.

A measurement only (nothing is chosen on it). Each dataset: 4 micrographs, 15 exemplars of the
target on the first; ``cryoshot pick`` runs as a user would (defaults, the typed diameter = the
target's largest extent rounded to 10 Å, every micrograph picked), and F1 is scored on the other
three against the target's truth (IoU >= 0.5 at that diameter), with the automatic cut and at
each query's best threshold. Beside it, the classical baseline of ``bench_picking.py`` (the
exemplars' rotationally averaged template, NCC, the background-tail threshold) on the same input.
The targets include 5gjv, which no part of cryoshot has seen in any form.

    .venv/bin/python benchmarks/othersim_picking.py [--root runs/othersim_picking] [--sets I ...]
    .venv/bin/python benchmarks/othersim_picking.py --dev --scales default 0.8   # training structures only
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from bench_picking import baseline_inputs, evaluate_rows, template_baseline
from othersim import OtherConfig, contamination_mask, simulate_dataset
from robust_picking import pick_and_score
from scipy.spatial import cKDTree

from cryoshot.io.star import read_star_table
from cryoshot.picking.workflow import PickConfig
from cryoshot.utils.threads import configure_threads

SEED = 6161  # never used elsewhere
# name: (target, MicrographConfig-like settings)
SETS = {
    "5gjv among 1bxn + 3gl1, 1.2 Å/px 3072², SNR 0.02, float32 counts": (
        "5gjv", OtherConfig(pixel_size_A=1.2, abundance={"5gjv": 1, "1bxn": 1, "3gl1": 1}, snr=0.02)),
    "5gjv (1 in 5) among 3cf3 + 1u6g, 1.0 Å/px 3072², SNR 0.015, int16 counts": (
        "5gjv", OtherConfig(pixel_size_A=1.0, abundance={"5gjv": 1, "3cf3": 2, "1u6g": 2}, snr=0.015, int16=True,
                            n_particles=120)),
    "1u6g among 3qm1 + 3gl1 + 1bxn, crowded (250), 1.5 Å/px 2560², SNR 0.03, defocus 0.8-2 µm": (
        "1u6g", OtherConfig(size_px=(2560, 2560), pixel_size_A=1.5, n_particles=250, defocus_um=(0.8, 2.0),
                            abundance={"1u6g": 1, "3qm1": 1, "3gl1": 1, "1bxn": 1}, snr=0.03)),
    "3cf3 alone, 1.3 Å/px 3072 x 2560, SNR 0.02, 2 ice crystals, no carbon": (
        "3cf3", OtherConfig(size_px=(2560, 3072), pixel_size_A=1.3, abundance={"3cf3": 1}, snr=0.02, n_particles=100,
                            n_ice_crystals=2, carbon_edge=False)),
    # the potential as it is (7.5 V mean inner potential), the noise from the dose alone
    "5gjv among 1bxn + 3gl1, 1.2 Å/px 3072², physical, 40 e/Å²": (
        "5gjv", OtherConfig(pixel_size_A=1.2, abundance={"5gjv": 1, "1bxn": 1, "3gl1": 1}, snr=None)),
    "1u6g among 3qm1 + 3gl1 + 1bxn, crowded (250), 1.5 Å/px 2560², physical, 30 e/Å²": (
        "1u6g", OtherConfig(size_px=(2560, 2560), pixel_size_A=1.5, n_particles=250, defocus_um=(0.8, 2.0),
                            abundance={"1u6g": 1, "3qm1": 1, "3gl1": 1, "1bxn": 1}, snr=None, dose_e_per_A2=30.0)),
    "3cf3 among 1u6g + 3gl1, 1.3 Å/px 3072 x 2560, physical, 20 e/Å²": (
        "3cf3", OtherConfig(size_px=(2560, 3072), pixel_size_A=1.3, abundance={"3cf3": 1, "1u6g": 1, "3gl1": 1},
                            snr=None, dose_e_per_A2=20.0)),
}  # fmt: skip
# the same simulator on training structures only (every PDB here is one of simulate/splits.py's training maps):
# for choosing anything that othersim data suggest, so that the sets above stay a test
DEV_SETS = {
    "dev: 2cg9 among 3d2f + 1s3x, 1.2 Å/px 3072², physical, 40 e/Å²": (
        "2cg9", OtherConfig(pixel_size_A=1.2, abundance={"2cg9": 1, "3d2f": 1, "1s3x": 1}, snr=None)),
    "dev: 1qvr among 2cg9 + 3h84, 1.5 Å/px 2560², physical, 30 e/Å², crowded (220)": (
        "1qvr", OtherConfig(size_px=(2560, 2560), pixel_size_A=1.5, n_particles=220,
                            abundance={"1qvr": 1, "2cg9": 1, "3h84": 1}, snr=None, dose_e_per_A2=30.0)),
    "dev: 3d2f alone, 1.3 Å/px 3072 x 2560, SNR 0.02": (
        "3d2f", OtherConfig(size_px=(2560, 3072), pixel_size_A=1.3, abundance={"3d2f": 1}, snr=0.02, n_particles=100)),
    "dev: 3h84 (1 in 3) among 1qvr + 1s3x, 1.0 Å/px 3072², SNR 0.02, int16 counts": (
        "3h84", OtherConfig(pixel_size_A=1.0, abundance={"3h84": 1, "1qvr": 1, "1s3x": 1}, snr=0.02, int16=True)),
}  # fmt: skip


def baseline_f1(ds: Path, target: str, diameter_A: float, particle_px: int = 16) -> tuple[float, float]:
    """The template baseline, binned for ``diameter_A``: F1 with the tail threshold and at the best threshold."""
    ref, ex_xy, queries = baseline_inputs(ds, diameter_A, particle_px, exemplars="ex.star")
    cands = template_baseline([ref], ex_xy, queries, particle_px)
    truth = read_star_table(ds / "coordinates.star")
    truth = truth[truth["cryoshotStructureName"] == target]
    truths = [truth[truth["rlnMicrographName"] == m.name][["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
              for m in sorted(ds.glob("mic_*.mrc"))[1:]]  # fmt: skip
    rows = evaluate_rows(cands, truths, diameter_A / ref.pixel_size_A)
    return rows["tail"].f1, rows["best (oracle)"].f1


def recall_by_area(ds: Path, picks_star: Path, target: str, diameter_px: float) -> tuple[float, float, float]:
    """(share of the queries' targets on ice crystals or carbon, recall there, recall elsewhere): a target counts
    as found when a pick lies within a quarter diameter of it."""
    truth = read_star_table(ds / "coordinates.star")
    picks = read_star_table(picks_star)
    found = {True: [], False: []}
    for m, mic in enumerate(sorted(ds.glob("mic_*.mrc"))):
        if m == 0:
            continue
        con = contamination_mask(ds, m)
        t = truth[(truth["rlnMicrographName"] == mic.name) & (truth["cryoshotStructureName"] == target)]
        txy = t[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
        p = picks[[str(n).endswith(mic.name) for n in picks["rlnMicrographName"]]]
        pxy = p[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
        dist = cKDTree(pxy).query(txy)[0] if len(pxy) else np.full(len(txy), np.inf)
        for (x, y), d in zip(txy, dist, strict=True):
            found[bool(con[int(y), int(x)])].append(d <= 0.25 * diameter_px)
    n_on, n_off = len(found[True]), len(found[False])
    return (n_on / max(n_on + n_off, 1), float(np.mean(found[True])) if n_on else float("nan"),
            float(np.mean(found[False])) if n_off else float("nan"))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("runs/othersim_picking"))
    ap.add_argument("--sets", type=int, nargs="*", help="indices of the datasets to run (default: all)")
    ap.add_argument("--dev", action="store_true", help="the dev sets (training structures) instead, in ROOT/dev*")
    ap.add_argument("--scales", nargs="*", default=["default"],
                    help="PickConfig.diameter_scale values to run, 'default' for the shipped default (the default)")  # fmt: skip
    a = ap.parse_args()
    configure_threads()
    a.root.mkdir(parents=True, exist_ok=True)
    for k, (name, (target, cfg)) in enumerate((DEV_SETS if a.dev else SETS).items()):
        if a.sets and k not in a.sets:
            continue
        cfg.seed = SEED + k + (100 if a.dev else 0)
        t0 = time.time()
        ds = simulate_dataset(a.root / f"{'dev' if a.dev else 'set'}{k}", cfg, 4, target)
        truth = read_star_table(ds / "coordinates.star")
        meta = json.loads((ds / "config.json").read_text())
        extent = meta["diameters_A"][target]
        typed = float(round(extent / 10) * 10)
        n_t = int((truth["cryoshotStructureName"] == target).sum())
        snr = np.mean(meta["snr_over_particle_discs"])
        print(f"\n{name}: target {target} ({extent:.0f} Å, typed {typed:g}), {n_t} target particles in 4 "
              f"micrographs, SNR over the particle discs {snr:.3f} (simulated in {time.time() - t0:.0f} s)",
              flush=True)  # fmt: skip
        for scale in [None if v == "default" else float(v) for v in a.scales]:
            work = ds / ("pick" if scale is None else f"pick_scale{scale:g}")
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            t0 = time.time()
            cfg = PickConfig(diameter_A=typed, diameter_scale=scale)
            r, best = pick_and_score(ds, target, typed, cfg, ds / "ex.star", work)
            label = "cryoshot pick (defaults)" if scale is None else f"cryoshot, working scale {scale:g}"
            print(f"  {label:26s} precision {r['precision']:.3f} recall {r['recall']:.3f} F1 {r['f1']:.3f} "
                  f"({r['n_picks']} picks, {r['n_truth']} particles); best threshold F1 {best:.3f}; "
                  f"{time.time() - t0:.0f} s for 4 micrographs", flush=True)  # fmt: skip
            share, r_on, r_off = recall_by_area(ds, work / "picks_queries.star", target, extent / meta["pixel_size_A"])
            print(f"  {'':26s} {share:.0%} of the targets lie on ice crystals or carbon: found {r_on:.2f} of those, "
                  f"{r_off:.2f} of the others (a pick within 0.25 diameters)", flush=True)  # fmt: skip
        b_auto, b_best = baseline_f1(ds, target, typed)
        print(f"  template NCC baseline      F1 {b_auto:.3f} (tail threshold); best threshold F1 {b_best:.3f}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
