"""Issue 14's targets over every picking dataset made so far: cryoshot's automatic F1 against Topaz's
best-threshold F1 (each Topaz run found) and against the classical baseline's automatic F1.

Reads what ``bench_picking.py --json`` wrote for each dataset folder and scores every Topaz run
found in it (``bench_topaz.py``'s work folders: picks_trained.txt, picks_general.txt) with
:func:`bench_topaz.topaz_counts`. Nothing is trained or tuned here.

    cd benchmarks && ../.venv/bin/python picking_verdict.py \\
        ../runs/bench_picking=../runs/bench_picking_shift2.json ../runs/bench_picking_r1=../runs/bench_picking_r1.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from bench_topaz import topaz_counts

DEFAULT_ROW = "(default)"
BASELINE_ROW = "template NCC tail"


def dataset_folder(root: Path, name: str) -> tuple[Path, str]:
    """bench_picking's dataset name ('3cf3 (+1u6g, 3gl1) SNR 0.02') -> (folder, target)."""
    m = re.match(r"(\S+) \(.*\) SNR ([\d.]+)$", name)
    if m is None:
        raise SystemExit(f"unexpected dataset name {name!r}")
    return root / f"{m[1]}_snr{float(m[2]):g}", m[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="+", help="ROOT=JSON: a datasets folder and bench_picking's --json for it")
    ap.add_argument("--row", default=None, help="cryoshot's automatic row, e.g. 'cryoshot gmm3-pooled' (default: "
                    "the row bench_picking marked '(default)' when it ran)")  # fmt: skip
    a = ap.parse_args()
    rows = []
    print(f"{'dataset':34s} {'cryoshot auto':>13s} {'best':>6s} {'baseline':>8s}   Topaz 15 ex., best threshold (runs)"
          "   Topaz general")  # fmt: skip
    for pair in a.pairs:
        root, js = (Path(p) for p in pair.split("=", 1))
        for name, res in json.loads(js.read_text()).items():
            ds, target = dataset_folder(root, name)
            auto = res[a.row] if a.row else next(v for k, v in res.items() if k.endswith(DEFAULT_ROW))
            best = res["cryoshot best (oracle)"]["f1"]
            base = res[BASELINE_ROW]["f1"]
            runs = sorted(p.parent for p in ds.glob("*/picks_trained.txt"))
            topaz = [topaz_counts(ds, target, w / "picks_trained.txt").f1 for w in runs]
            general = [topaz_counts(ds, target, w / "picks_general.txt").f1 for w in runs if (w / "picks_general.txt").exists()]  # fmt: skip
            rows.append(dict(name=f"{root.name}/{ds.name}", target=target, auto=auto["f1"], best=best, base=base,
                             topaz=topaz, general=general))  # fmt: skip
            tz = " ".join(f"{f:.3f}" for f in topaz) or "not run"
            gen = f"{np.mean(general):.3f}" if general else "-"
            print(f"{rows[-1]['name']:34s} {auto['f1']:13.3f} {best:6.3f} {base:8.3f}   {tz:36s} {gen}")
    with_topaz = [r for r in rows if r["topaz"]]
    print(f"\n{len(rows)} datasets, {len(with_topaz)} with Topaz runs ({sum(len(r['topaz']) for r in rows)} runs)")
    if with_topaz:
        beat_mean = sum(r["auto"] >= np.mean(r["topaz"]) for r in with_topaz)
        beat_all = sum(r["auto"] >= max(r["topaz"]) for r in with_topaz)
        margin = np.mean([r["auto"] - np.mean(r["topaz"]) for r in with_topaz])
        spread = np.mean([np.ptp(r["topaz"]) for r in with_topaz if len(r["topaz"]) > 1] or [np.nan])
        print(f"cryoshot auto >= Topaz's mean best-threshold F1 on {beat_mean} of {len(with_topaz)}; >= its best run "
              f"on {beat_all}; mean margin {margin:+.3f} (Topaz's run-to-run range, mean {spread:.3f})")  # fmt: skip
        for t in dict.fromkeys(r["target"] for r in with_topaz):
            rs = [r for r in with_topaz if r["target"] == t]
            print(f"  {t}: cryoshot auto {np.mean([r['auto'] for r in rs]):.3f}, Topaz "
                  f"{np.mean([np.mean(r['topaz']) for r in rs]):.3f} (over {len(rs)} datasets)")  # fmt: skip
    print(f"cryoshot auto - baseline auto: mean {np.mean([r['auto'] - r['base'] for r in rows]):+.3f}, "
          f"least {min(r['auto'] - r['base'] for r in rows):+.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
