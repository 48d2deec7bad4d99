"""Picking on micrographs simulated unlike the benchmark's: does the default hold, and does each opinion help?

Nine datasets of novel structures (never used in training or in any choice), each unlike
``bench_picking.py``'s in several ways at once (pixel size, micrograph size, crowding, B-factor,
defocus range, amplitude contrast, ice, an uneven background, distractors or none, structural noise and
a detector MTF). ``cryoshot pick`` runs as a user
would run it (15 exemplars on the first micrograph, every micrograph picked), with the default
figure of merit, without flattening the background, and with the opinions removed one by one; F1 is scored on the other micrographs
against the target's truth (``evaluate_picks``, IoU >= 0.5).

    .venv/bin/python benchmarks/robust_picking.py [--root runs/robust_picking] [--sets I ...] [--variants I ...]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bench_picking import oracle_f1

from cryoshot.evaluate.picks import evaluate_picks
from cryoshot.io.star import read_star_table, write_star
from cryoshot.picking import micrograph
from cryoshot.picking.matching import MatchCounts
from cryoshot.picking.micrograph import micrograph_header
from cryoshot.picking.workflow import PickConfig, coordinate_file_name, pick
from cryoshot.simulate.micrographs import MicrographConfig
from cryoshot.simulate.optics import Microscope
from cryoshot.simulate.workflow import simulate_micrographs
from cryoshot.utils.threads import configure_threads

SEED = 7373  # never used elsewhere
# the benchmark's micrographs (bench_picking.make_dataset) and a detector-like noise on top of them
BENCH_LIKE = dict(size_px=2048, pixel_size_A=2.0, particle_box_px=128, n_particles=150, snr=0.02, n_ice_blobs=1)
DETECTOR = dict(structural_noise=0.5, mtf_nyquist=0.6)
DETECTOR_NAME = "half the noise structural, detector MTF 0.6 at Nyquist"
# name: (target, distractors, diameter Å, MicrographConfig overrides)
SETS = {
    "3cf3 alone, 1.5 Å/px, B 100, defocus 0.8-3.5 µm, 2 ice blobs": (
        "3cf3", (), 170.0, dict(size_px=2048, pixel_size_A=1.5, particle_box_px=160, n_particles=120, snr=0.02,
                                microscope=Microscope(b_factor_A2=100.0), defocus_min_um=0.8, defocus_max_um=3.5,
                                n_ice_blobs=2)),
    "1bxn + 4v4r (crowded), 1.25 Å/px 2560², amplitude contrast 0.1": (
        "1bxn", ("4v4r",), 160.0, dict(size_px=2560, pixel_size_A=1.25, particle_box_px=256, n_particles=200,
                                      snr=0.015, microscope=Microscope(amplitude_contrast=0.1, b_factor_A2=50.0))),
    "6qzp among 1u6g + 3gl1, 2.5 Å/px, defocus 1.5-4 µm, SNR 0.03": (
        "6qzp", ("1u6g", "3gl1"), 300.0, dict(size_px=2048, pixel_size_A=2.5, particle_box_px=160, n_particles=150,
                                              snr=0.03, defocus_min_um=1.5, defocus_max_um=4.0)),
    "3cf3 + 1u6g, uneven ice (1.5 noise sd varying over 2 diameters), 2 Å/px, SNR 0.02": (
        "3cf3", ("1u6g",), 170.0, dict(size_px=2048, pixel_size_A=2.0, particle_box_px=128, n_particles=120,
                                       snr=0.02, ice_gradient=1.5, ice_gradient_scale_px=170.0)),
    "3cf3 + 1u6g, uneven ice (1 noise sd varying over 4 diameters), 2 Å/px, SNR 0.02": (
        "3cf3", ("1u6g",), 170.0, dict(size_px=2048, pixel_size_A=2.0, particle_box_px=128, n_particles=120,
                                       snr=0.02, ice_gradient=1.0, ice_gradient_scale_px=340.0)),
    # the benchmark's 3cf3 and 1bxn compositions, each with and without a detector and structural noise (pairs
    # from one seed: the same particles, defocus and contaminants; only the noise's colour and the blur differ)
    "3cf3 among 1u6g + 3gl1, 2 Å/px, SNR 0.02, white noise (control)": ("3cf3", ("1u6g", "3gl1"), 170.0, BENCH_LIKE),
    f"3cf3 among 1u6g + 3gl1, 2 Å/px, SNR 0.02, {DETECTOR_NAME}": (
        "3cf3", ("1u6g", "3gl1"), 170.0, {**BENCH_LIKE, **DETECTOR, "seed": SEED + 5}),
    "1bxn among 3gl1 + 3qm1, 2 Å/px, SNR 0.02, white noise (control)": ("1bxn", ("3gl1", "3qm1"), 160.0, BENCH_LIKE),
    f"1bxn among 3gl1 + 3qm1, 2 Å/px, SNR 0.02, {DETECTOR_NAME}": (
        "1bxn", ("3gl1", "3qm1"), 160.0, {**BENCH_LIKE, **DETECTOR, "seed": SEED + 7}),
}  # fmt: skip
VARIANTS = {  # (template weight, view weight, background flattening in diameters; None: the default)
    "default (cosine 0.1, NCC 0.4, views 0.5)": (0.4, 0.5, None),
    "background not flattened": (0.4, 0.5, 0.0),
    "no views (NCC 0.6)": (0.6, 0.0, None),
    "no template (cosine 0.5, views 0.5)": (0.0, 0.5, None),
    "cosine only (the paper)": (0.0, 0.0, None),
}


def make(root: Path, k: int, target: str, distractors: tuple, over: dict, n_mic: int = 4) -> Path:
    out = root / f"set{k}"
    if (out / "ex.star").exists():
        return out
    cfg = MicrographConfig(**{"carbon_edge": True, "invert": True, "seed": SEED + k, **over})
    simulate_micrographs([target, *distractors], out, cfg, n_mic, progress=False)
    df = read_star_table(out / "coordinates.star")
    ref = df[(df["rlnMicrographName"] == "mic_0000.mrc") & (df["cryoshotStructureName"] == target)]
    write_star(out / "ex.star", ref.sample(15, random_state=SEED)[["rlnMicrographName", "rlnCoordinateX",
                                                                    "rlnCoordinateY"]])  # fmt: skip
    queries = df[df["rlnMicrographName"] != "mic_0000.mrc"]
    write_star(out / "truth_queries.star", queries)
    return out


def pick_and_score(
    ds: Path, target: str, diameter_A: float, cfg: PickConfig, ex: Path, work: Path
) -> tuple[dict, float]:
    """``cryoshot pick`` with ``cfg`` (its diameter the one typed) on every micrograph of ``ds``, into ``work/picks``;
    scored on the queries (all but ``mic_0000.mrc``) against the target's truth at its true ``diameter_A``:
    (``evaluate_picks``'s result for the automatic threshold, F1 at each query's best threshold over the written
    candidates)."""
    mics = sorted(str(p) for p in ds.glob("mic_*.mrc"))
    out = work / "picks"
    pick(mics, ex, out, cfg, progress=False, log=lambda s: None)
    picks = read_star_table(out / "picks.star")
    picks = picks[[not str(m).endswith("mic_0000.mrc") for m in picks["rlnMicrographName"]]]
    write_star(work / "picks_queries.star", picks, force=True)
    r = evaluate_picks(ds / "truth_queries.star", work / "picks_queries.star", diameter_A,
                       class_column="cryoshotStructureName", target=target)  # fmt: skip
    truth = read_star_table(ds / "truth_queries.star")
    truth = truth[truth["cryoshotStructureName"] == target]
    ps = micrograph_header(mics[0])[1]
    best = MatchCounts(0, 0, 0)
    for m in mics[1:]:
        c = read_star_table(out / "candidates" / coordinate_file_name(Path(m), "candidates"))
        t = truth[truth["rlnMicrographName"] == Path(m).name][["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
        best = best + oracle_f1(c[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(),
                                c["rlnAutopickFigureOfMerit"].to_numpy(), t, diameter_A / ps)[0]  # fmt: skip
    return r, best.f1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("runs/robust_picking"))
    ap.add_argument("--sets", type=int, nargs="*", help="indices of the datasets to run (default: all)")
    ap.add_argument("--variants", type=int, nargs="*", help="indices of the variants to run (default: all)")
    a = ap.parse_args()
    configure_threads()
    a.root.mkdir(parents=True, exist_ok=True)
    default_flatten = micrograph.FLATTEN_DIAMETERS
    for k, (name, (target, distractors, diameter, over)) in enumerate(SETS.items()):
        if a.sets and k not in a.sets:
            continue
        ds = make(a.root, k, target, distractors, over)
        mics = sorted(str(p) for p in ds.glob("mic_*.mrc"))
        print(f"\n{name} (target {target}, {len(mics) - 1} query micrographs)", flush=True)
        for vi, (vname, (tw, vw, flatten)) in enumerate(VARIANTS.items()):
            if a.variants is not None and vi not in a.variants:
                continue
            work = ds / f"picks_{tw}_{vw}_{flatten}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            micrograph.FLATTEN_DIAMETERS = default_flatten if flatten is None else flatten
            try:
                cfg = PickConfig(diameter_A=diameter, template_weight=tw, view_weight=vw)
                r, _ = pick_and_score(ds, target, diameter, cfg, ds / "ex.star", work)
            finally:
                micrograph.FLATTEN_DIAMETERS = default_flatten
            print(f"  {vname:44s} precision {r['precision']:.3f} recall {r['recall']:.3f} F1 {r['f1']:.3f} "
                  f"({r['n_picks']} picks, {r['n_truth']} particles)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
