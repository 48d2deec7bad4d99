"""Stage 1 of ``cryoshot pick`` under today's figure of merit: with the self-cross similarity loss or without.

Stage 1's loss weights (beta = 1, the PU-adjusted loss) were chosen when the picker ranked by
the MAE's cosine alone. Since then the cosine carries 0.1 of the figure of merit, but stage 1
still decides where the candidates are (the cosine map's peaks). This script runs ``cryoshot
pick`` end to end, as shipped, on the dev sets (held-out procedural molecules with distractors,
and the training-map sets at SNR 0.02), once per stage-1 variant, and scores the picks on the
4 query micrographs against the target (IoU >= 0.5 rule). No novel benchmark structure is used.

    cd benchmarks && ../.venv/bin/python choose_pick_stage1.py [--runs ../runs]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_picking import typed_diameter_A
from choose_pick_shift import dev_sets

from cryoshot.evaluate.picks import evaluate_picks
from cryoshot.picking.matching import MatchCounts
from cryoshot.picking.stage1 import LossConfig, Stage1Config
from cryoshot.picking.workflow import PickConfig, pick
from cryoshot.utils.threads import configure_threads

VARIANTS = {  # name: stage-1 settings
    "PU-adjusted SCS, beta 1 (shipped)": Stage1Config(),
    "no SCS loss (beta 0)": Stage1Config(loss=LossConfig(beta=0.0)),
    "no stage 1": Stage1Config(steps=0),
}


def f1_of(ds: Path, variant: str, stage1: Stage1Config) -> MatchCounts:
    """``cryoshot pick`` on the dataset's 5 micrographs with this stage 1; counts over the 4 queries."""
    key = ds.name
    target = key.split("_")[0]
    diameter = typed_diameter_A(target)
    out = ds / "stage1_variants" / variant.split(" (")[0].replace(" ", "_").replace(",", "")
    mics = sorted(ds.glob("mic_*.mrc"))
    if not (out / "picks.star").exists():
        out.parent.mkdir(exist_ok=True)
        cfg = PickConfig(diameter_A=diameter, stage1=stage1)
        pick([str(m) for m in mics], ds / "ex.star", out, cfg, force=True, progress=False, log=lambda s: None)
    # cryoshot evaluate-picks, summed over the queries (picks.star holds the reference's picks too)
    r = evaluate_picks(ds / "truth_queries.star", out / "picks.star", diameter,
                       class_column="cryoshotStructureName", target=target)  # fmt: skip
    tot = MatchCounts(0, 0, 0)
    for m in mics[1:]:
        c = r["per_micrograph"].get(m.name)
        tot = tot + (MatchCounts(c["true_positives"], c["n_picks"], c["n_truth"]) if c else MatchCounts(0, 0, 0))
    return tot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="../runs")
    ap.add_argument("--all-snr", action="store_true", help="the training-map sets at SNR 0.01 too")
    a = ap.parse_args()
    configure_threads()
    runs = Path(a.runs)
    sets = [(g, ds) for g, ds in dev_sets(runs) if g != "alone"]
    if not a.all_snr:
        sets = [(g, ds) for g, ds in sets if g != "training maps" or "_snr0.02" in ds.name]
    rows: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for group, ds in sets:
        line = []
        for v, s1 in VARIANTS.items():
            t0 = time.perf_counter()
            c = f1_of(ds, v, s1)
            rows[v].append(c.f1)
            line.append(f"{c.f1:.3f} ({c.n_picks} picks, {time.perf_counter() - t0:.0f} s)")
        print(f"{group:13s} {ds.name:28s} " + "  ".join(line), flush=True)
    print(f"\nmean F1 over {len(sets)} dev sets (picks on the 4 queries, the shipped cut):")
    for v, f in rows.items():
        better = sum(x > y + 1e-9 for x, y in zip(f, rows[next(iter(VARIANTS))], strict=True))
        print(f"  {v:36s} {np.mean(f):.3f}   better than shipped on {better} of {len(f)}")


if __name__ == "__main__":
    main()
