"""Should ``cryoshot pick`` flatten the micrograph's background, and over how many diameters? Decided on
training structures.

The ten datasets of training maps of ``choose_pick_rerank.py --more`` (seed 9191; made here if missing), as
simulated and with an added background (per micrograph: a random tilt plus a smooth random field
varying over 1/8 of the micrograph, in all ``amp`` standard deviations of the micrograph).
``cryoshot pick`` runs as a user runs it (15 exemplars on the first micrograph) with
``FLATTEN_DIAMETERS`` (the running median's window, in particle diameters; 0: no flattening) set
to each value; F1 over the other 4 micrographs against the target.

    cd benchmarks && ../.venv/bin/python choose_flatten.py [--amps 0 1] [--flatten 0 2.5] [--sets KEY ...]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import mrcfile
import numpy as np
from bench_picking import make_dataset, typed_diameter_A
from choose_pick_rerank import MORE_SETS
from choose_pick_threshold import DEV_SEED, DEV_SETS
from scipy import ndimage

from cryoshot.evaluate.picks import evaluate_picks
from cryoshot.io.star import read_star_table, write_star
from cryoshot.picking import micrograph
from cryoshot.picking.workflow import PickConfig, pick
from cryoshot.utils.threads import configure_threads


def with_background(src: Path, dst: Path, amp: float, seed: int) -> Path:
    """A copy of dataset ``src`` in ``dst`` with an added smooth background of ``amp`` micrograph sds."""
    if (dst / "ex.star").exists():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for p in sorted(src.glob("mic_*.mrc")):
        with mrcfile.open(p) as m:
            img, vs = m.data.astype(np.float32), m.voxel_size.x
        h, w = img.shape
        if amp:
            f = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), h / 8)
            yy, xx = np.mgrid[:h, :w] / max(h, w)
            ramp = xx * rng.normal() + yy * rng.normal()
            ramp = (ramp - ramp.mean()) / (ramp.std() + 1e-9)
            img = img + amp * img.std() * (0.5 * f / f.std() + ramp)
        with mrcfile.new(dst / p.name) as m:
            m.set_data(img.astype(np.float32))
            m.voxel_size = vs
    ex = read_star_table(src / "exemplars25.star").iloc[:15]
    write_star(dst / "ex.star", ex[["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]])
    df = read_star_table(src / "coordinates.star")
    write_star(dst / "truth_queries.star", df[df["rlnMicrographName"] != "mic_0000.mrc"])
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("../runs/choose_pick_threshold"))
    ap.add_argument("--out", type=Path, default=Path("../runs/choose_flatten"))
    ap.add_argument("--amps", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--flatten", type=float, nargs="+", default=[0.0, 2.5])
    ap.add_argument("--sets", nargs="*", help="dataset keys such as 2cg9_snr0.02 (default: all ten)")
    a = ap.parse_args()
    configure_threads()
    a.root.mkdir(parents=True, exist_ok=True)
    all_sets = {**DEV_SETS, **MORE_SETS}
    default_keys = [f"{t}_snr{s:g}" for s in (0.02, 0.01) for t in all_sets]
    keys = a.sets or default_keys
    results: dict[tuple[float, float], list[float]] = {}
    order = [f"{t}_snr{s:g}" for t in all_sets for s in (0.02, 0.01)]  # choose_pick_rerank's numbering
    for key in keys:
        target, snr = key.split("_")[0], float(key.split("_snr")[1])
        diameter = typed_diameter_A(target)
        # the same dataset as choose_pick_rerank.py --more makes (reused when it exists)
        make_dataset(a.root, target, snr, 5, 2048, order.index(key), all_sets[target], diameter, DEV_SEED)
        for amp in a.amps:
            # one background per dataset, whichever --sets are run
            ds = with_background(a.root / key, a.out / f"{key}_a{amp:g}", amp, seed=100 + default_keys.index(key))
            mics = sorted(str(p) for p in ds.glob("mic_*.mrc"))
            for fl in a.flatten:
                micrograph.FLATTEN_DIAMETERS = fl
                out = ds / f"picks_f{fl:g}"
                shutil.rmtree(out, ignore_errors=True)
                pick(mics, ds / "ex.star", out, PickConfig(diameter_A=diameter), progress=False, log=lambda s: None)
                picks = read_star_table(out / "picks.star")
                picks = picks[[not str(m).endswith("mic_0000.mrc") for m in picks["rlnMicrographName"]]]
                write_star(out / "pq.star", picks, force=True)
                r = evaluate_picks(ds / "truth_queries.star", out / "pq.star", diameter,
                                   class_column="cryoshotStructureName", target=target)  # fmt: skip
                results.setdefault((amp, fl), []).append(r["f1"])
                print(f"{key} amp {amp:g} flatten {fl:g}: P {r['precision']:.3f} R {r['recall']:.3f} "
                      f"F1 {r['f1']:.3f} ({r['n_picks']} picks, {r['n_truth']})", flush=True)  # fmt: skip
    print("\nmean F1 over the datasets")
    for (amp, fl), f1 in sorted(results.items()):
        print(f"  added background {amp:g} sd, flatten {fl:g} diameters: {np.mean(f1):.3f} ({len(f1)} sets)")


if __name__ == "__main__":
    main()
