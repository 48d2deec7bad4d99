"""Picking when the user's input is imperfect: a diameter typed 20% off, clicks off-centre, fewer clicks.

A structural biologist types the diameter from memory or a rough measurement, clicks particle
centres by eye on a noisy micrograph, and may click five particles rather than fifteen. This
script runs ``cryoshot pick`` as a user would (defaults, every micrograph picked) on existing
datasets with the exemplar file or the diameter perturbed, and scores F1 on the query
micrographs against the target's truth at the *true* diameter (``evaluate_picks``, IoU >= 0.5).

Datasets: the dev sets of ``choose_flatten.py`` (training maps; for choosing any change) with
``--dev``, or the novel-structure robustness sets of ``robust_picking.py`` (measurement only).

    .venv/bin/python benchmarks/robust_picking_user.py --dev [--runs runs] [--variants I ...]
    .venv/bin/python benchmarks/robust_picking_user.py [--runs runs] [--sets I ...]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from bench_picking import typed_diameter_A
from robust_picking import SETS, pick_and_score

from cryoshot.io.star import read_star_table, write_star
from cryoshot.picking.micrograph import micrograph_header
from cryoshot.picking.workflow import PickConfig
from cryoshot.utils.threads import configure_threads

SEED = 5151  # the perturbations' seed, never used elsewhere
DEV_SETS = ("1qvr_snr0.02_a0", "2cg9_snr0.02_a0", "3d2f_snr0.02_a0", "4v7r_snr0.02_a0", "5mrc_snr0.02_a0")
# name: (diameter factor, click error sd in diameters (per axis), number of exemplars kept)
VARIANTS = {
    "as given": (1.0, 0.0, 15),
    "diameter typed x0.8": (0.8, 0.0, 15),
    "diameter typed x1.25": (1.25, 0.0, 15),
    "clicks off by 0.1 d (sd per axis)": (1.0, 0.1, 15),
    "clicks off by 0.2 d (sd per axis)": (1.0, 0.2, 15),
    "5 exemplars": (1.0, 0.0, 5),
}


def perturbed_exemplars(ex: Path, out: Path, diameter_px: float, click_sd: float, n: int, seed: int) -> Path:
    """``ex`` with Gaussian click error (``click_sd`` diameters per axis) and its first ``n`` rows."""
    df = read_star_table(ex).iloc[:n].copy()
    rng = np.random.default_rng(seed)
    for c in ("rlnCoordinateX", "rlnCoordinateY"):
        df[c] = df[c] + rng.normal(0.0, click_sd * diameter_px, len(df))
    write_star(out, df, force=True)
    return out


def datasets(runs: Path, dev: bool, sets: list[int] | None) -> list[tuple[str, Path, str, float]]:
    """(name, folder, target, true diameter in Å)."""
    if dev:
        return [(n, runs / "choose_flatten" / n, n.split("_")[0], float(typed_diameter_A(n.split("_")[0])))
                for n in DEV_SETS]  # fmt: skip
    return [(name, runs / "robust_picking" / f"set{k}", target, diameter)
            for k, (name, (target, _, diameter, _)) in enumerate(SETS.items()) if not sets or k in sets]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--dev", action="store_true", help="the training-map dev sets (else the novel robustness sets)")
    ap.add_argument("--sets", type=int, nargs="*", help="robustness sets to run (default: all)")
    ap.add_argument("--variants", type=int, nargs="*", help="indices of the variants to run (default: all)")
    a = ap.parse_args()
    configure_threads()
    f1s: dict[str, list[float]] = {}
    for name, ds, target, diameter in datasets(a.runs, a.dev, a.sets):
        if not (ds / "ex.star").exists():
            raise SystemExit(f"{ds} is missing: run {'choose_flatten.py' if a.dev else 'robust_picking.py'} first")
        mics = sorted(str(p) for p in ds.glob("mic_*.mrc"))
        ps = micrograph_header(mics[0])[1]  # Å per pixel of the input micrographs
        print(f"\n{name} (target {target}, {diameter:g} Å, {len(mics) - 1} query micrographs)", flush=True)
        for vi, (vname, (factor, click_sd, n_ex)) in enumerate(VARIANTS.items()):
            if a.variants is not None and vi not in a.variants:
                continue
            work = ds / f"user_{vi}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            ex = perturbed_exemplars(ds / "ex.star", work / "ex.star", diameter / ps, click_sd, n_ex, SEED + vi)
            r, best = pick_and_score(ds, target, diameter, PickConfig(diameter_A=diameter * factor), ex, work)
            f1s.setdefault(vname, []).append(r["f1"])
            print(f"  {vname:36s} precision {r['precision']:.3f} recall {r['recall']:.3f} F1 {r['f1']:.3f} "
                  f"({r['n_picks']} picks, {r['n_truth']} particles); best threshold F1 {best:.3f}", flush=True)  # fmt: skip
    print("\nmean F1 over the datasets:")
    for vname, v in f1s.items():
        print(f"  {vname:36s} {np.mean(v):.3f}  ({len(v)} sets)")


if __name__ == "__main__":
    main()
