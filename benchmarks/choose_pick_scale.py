"""The picker's working scale: bin for the typed diameter, or for a fraction of it?

``cryoshot pick`` bins each micrograph so that the typed diameter spans the model's 16 px and
measures every internal distance (NMS, template and view boxes, background flattening) in that
diameter. Typed diameters are the particle's largest extent, or more; on the dev sets a diameter
typed 0.8x the extent picked better than the extent itself, and 1.25x much worse
(``robust_picking_user.py --dev``). This script runs ``cryoshot pick`` on the 10 training-map dev
sets of ``choose_pick_cut.py`` with ``--diameter`` = factor x the structure's typed diameter for
each factor, and scores the queries at the true diameter: F1 with the automatic threshold and at
each query's best threshold. Results are kept in ``<set>/scale_<factor>/result.json``.

    cd benchmarks && ../.venv/bin/python choose_pick_scale.py [--runs ../runs] [--factors 1 0.8 ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from bench_picking import typed_diameter_A
from choose_pick_cut import DEV_SETS, MORE_SETS
from robust_picking import pick_and_score

from cryoshot.picking.workflow import PickConfig
from cryoshot.utils.threads import configure_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    ap.add_argument("--factors", type=float, nargs="+", default=[1.0, 0.8, 0.65])
    ap.add_argument("--auto", action="store_true", help="also PickConfig's default (its cap on large particles)")
    ap.add_argument("--snrs", type=float, nargs="+", default=[0.02, 0.01])
    ap.add_argument(
        "--procedural",
        action="store_true",
        help="the 9 procedural dev sets of choose_pick_procedural.py (110-180 Å) instead of the training maps",
    )
    a = ap.parse_args()
    configure_threads()
    table: dict[float | str, list[tuple[float, float]]] = {}
    if a.procedural:
        sets = [(p.parent, p.parent.name.split("_")[0])
                for p in sorted((a.runs / "choose_pick_procedural").glob("**/cut.pkl"))]  # fmt: skip
    else:
        sets = [
            (a.runs / "choose_flatten" / f"{t}_snr{snr:g}_a0", t) for t in {**DEV_SETS, **MORE_SETS} for snr in a.snrs
        ]
    for ds, target in sets:
        diameter = float(typed_diameter_A(target))
        auto = PickConfig(diameter_A=diameter).work_diameter_A / diameter
        for label in a.factors + (["auto"] if a.auto else []):
            f = round(auto, 4) if label == "auto" else label
            work = ds / f"scale_{f:g}"
            res = work / "result.json"
            if not res.exists():
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir()
                # a fixed fraction: --diameter f x the true one, binned for exactly that; auto: PickConfig's
                # default, which bins the true diameter times ``auto`` (the same run as the fraction ``auto``)
                typed, scale = (diameter, None) if label == "auto" else (diameter * f, 1.0)
                r, best = pick_and_score(ds, target, diameter, PickConfig(diameter_A=typed, diameter_scale=scale),
                                         ds / "ex.star", work)  # fmt: skip
                res.write_text(json.dumps({"auto": r["f1"], "precision": r["precision"], "recall": r["recall"],
                                           "n_picks": r["n_picks"], "best": best}))  # fmt: skip
            r = json.loads(res.read_text())
            table.setdefault(label, []).append((r["auto"], r["best"]))
            print(f"{ds.name:18s} {label!s:>5} (x{f:g}) auto F1 {r['auto']:.3f} (P {r['precision']:.3f} "
                  f"R {r['recall']:.3f}, {r['n_picks']} picks)  best-threshold F1 {r['best']:.3f}", flush=True)  # fmt: skip
    print("\nmean over the sets (auto / best threshold):")
    ref = table[a.factors[0]]
    for f, v in table.items():
        better = sum(x[0] > y[0] + 1e-9 for x, y in zip(v, ref, strict=True))
        print(f"  {f!s:<5} {np.mean([x[0] for x in v]):.3f} / {np.mean([x[1] for x in v]):.3f}"
              f"  (auto better than x{a.factors[0]:g} on {better} of {len(v)})")  # fmt: skip


if __name__ == "__main__":
    main()
