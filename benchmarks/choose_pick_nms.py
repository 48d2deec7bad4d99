"""The suppression distance between candidates: 0.7 diameters (shipped) or less. Dev sets only.

On the second simulator's dev sets a third of the target particles off contamination have no
candidate within 0.25 diameters; the nearest lies about half a diameter away, often between two
touching particles. A shorter suppression distance lets a particle's own peak survive beside
such a peak. Each dev set's stage 2 runs again from its ``picker.pt`` (``cryoshot pick --model
picker.pt``, no stage 1) with each distance; the candidates are cut as ``cryoshot pick`` cuts
them (pooled gmm3, fitted to the queries). F1 over the queries at that cut and at each query's
best threshold, and the share of target particles with a candidate within 0.25 diameters.

Dev sets only (training structures), as in ``choose_pick_background_views.py``.

    cd benchmarks && ../.venv/bin/python choose_pick_nms.py [--distances 0.7 0.5] [--runs ../runs] [--work DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from choose_pick_background_views import dev_runs
from choose_pick_expected_f1 import best_threshold_counts, f1_at, queries
from scipy.spatial import cKDTree

from cryoshot.picking.threshold import rule_thresholds
from cryoshot.picking.workflow import PickConfig, pick


def evaluate(qs: list[dict]) -> tuple[float, float, float]:
    """(F1 at the pooled gmm3 cut, F1 at each query's best threshold, share of targets with a candidate within 0.25
    diameters) of the queries ``qs`` (as :func:`choose_pick_expected_f1.queries` gives them)."""
    th = rule_thresholds([q["merit"] for q in qs], "gmm3-pooled", fisher=False)[0]
    near = [cKDTree(q["xy"]).query(q["truth"])[0] <= 0.25 * q["d_px"] for q in qs if len(q["truth"])]
    return f1_at(qs, th).f1, best_threshold_counts(qs).f1, float(np.concatenate(near).mean())


def print_summary(table: dict, names: dict, reference, what: str) -> None:
    """Mean over the dev sets of each variant's :func:`evaluate` rows (``table[variant]``: (group, F1 at the cut, F1
    at the best threshold, reach) per set), per group and in all, and on how many sets its cut beats the variant
    ``reference`` (``what`` names it); ``names[variant]`` is the variant's printed name."""
    print(f"\nmean F1 at the cut / at the best threshold, reach; sets better at the cut than {what}")
    ref = np.array([r[1] for r in table[reference]])
    for key, rows in table.items():
        f = np.array([r[1:] for r in rows])
        groups = {g: f[[r[0] == g for r in rows]] for g in dict.fromkeys(r[0] for r in rows)}
        parts = "; ".join(f"{g} {v[:, 0].mean():.3f} / {v[:, 1].mean():.3f}" for g, v in groups.items())
        print(f"  {names[key]}: all {f[:, 0].mean():.3f} / {f[:, 1].mean():.3f}, reach {f[:, 2].mean():.2f}; {parts}; "
              f"better on {(f[:, 0] > ref + 1e-9).sum()} of {len(f)}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distances", type=float, nargs="+", default=[0.7, 0.5])
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    ap.add_argument("--work", type=Path, default=None, help="folder for the new runs (default: a temporary one)")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="choose_pick_nms_"))
    work.mkdir(parents=True, exist_ok=True)
    table: dict[float, list[tuple]] = {}
    for group, ds, target, typed in dev_runs(a.runs):
        picker = next(ds.glob("**/picker.pt"))
        mics = sorted(ds.glob("mic_*.mrc"))
        row = []
        for dist in a.distances:
            out = work / f"{ds.name}_nms{dist:g}"
            pick(mics, None, out, PickConfig(diameter_A=typed, nms_distance=dist), model=str(picker), force=True,
                 progress=False, log=lambda _: None)  # fmt: skip
            r = evaluate(queries(ds, target, typed, run=out))
            table.setdefault(dist, []).append((group, *r))
            row.append(f"NMS {dist:g}: {r[0]:.3f} / {r[1]:.3f}, reach {r[2]:.2f}")
        print(f"{group}: {ds.name} ({target}): " + "; ".join(row), flush=True)
    print_summary(table, {d: f"NMS {d:g}" for d in table}, a.distances[0], "the first distance")


if __name__ == "__main__":
    main()
