"""The automatic cut fitted per micrograph, or once over all micrographs of a run.

``--threshold auto`` fits a three-component Gaussian mixture to each micrograph's figures of
merit and keeps the top component. A few hundred candidates make that fit unstable, and the
figure of merit is already standardised per micrograph (which is where one micrograph's imaging
differs from the next's), so one mixture fitted to the candidates of all micrographs together
might cut better. This script compares, on the same candidates of the dev sets (held-out
procedural molecules alone and with distractors, and training-map sets at two SNRs; no novel
benchmark structure), the per-micrograph cut with the pooled one at several posteriors.

    cd benchmarks && ../.venv/bin/python choose_pick_pooled_cut.py [--runs ../runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_picking import oracle_f1
from choose_pick_profile import cached_candidates
from choose_pick_shift import dev_sets

from cryoshot.picking.matching import MatchCounts, count_matches
from cryoshot.picking.threshold import gmm_threshold
from cryoshot.utils.threads import configure_threads

POSTERIORS = (0.5, 0.6, 0.7, 0.8, 0.9)


def per_micrograph(p: float, k: int = 3):
    return lambda qs: [gmm_threshold(q["merit"], components=k, posterior=p) for q in qs]


def pooled(p: float, k: int = 3):
    return lambda qs: [gmm_threshold(np.concatenate([q["merit"] for q in qs]), components=k, posterior=p)] * len(qs)


RULES = {
    "gmm3 per micrograph (shipped)": per_micrograph(0.5),
    "gmm3 per micrograph, posterior 0.7": per_micrograph(0.7),
    "gmm per micrograph": per_micrograph(0.5, 2),
    **{f"gmm3 pooled, posterior {p:g}": pooled(p) for p in POSTERIORS},
    "gmm pooled": pooled(0.5, 2),
}


def oracle(d: dict) -> MatchCounts:
    """Counts over the queries at each one's best threshold (chosen from the truth: an upper bound)."""
    return sum((oracle_f1(q["xy"], q["merit"], q["truth"], d["side"] / q["ps"])[0] for q in d["queries"]),
               MatchCounts(0, 0, 0))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="../runs")
    a = ap.parse_args()
    configure_threads()
    rows: dict[str, dict[str, list[float]]] = {}
    for group, ds in dev_sets(Path(a.runs)):
        d = cached_candidates(ds)
        f1 = {}
        for name, rule in RULES.items():
            tot = MatchCounts(0, 0, 0)
            for q, t in zip(d["queries"], rule(d["queries"]), strict=True):
                keep = q["merit"] >= t
                tot = tot + count_matches(q["xy"][keep], q["truth"], d["side"] / q["ps"], q["merit"][keep])
            f1[name] = tot.f1
        f1["oracle (best threshold per micrograph)"] = oracle(d).f1
        for name, v in f1.items():
            rows.setdefault(name, {}).setdefault(group, []).append(v)
        print(f"{group:12s} {ds.name:28s} " + " ".join(f"{v:.3f}" for v in f1.values()), flush=True)
    groups = list(next(iter(rows.values())))
    print("\nmean F1 over the 4 queries of each dev set, by group (" + ", ".join(
        f"{g}: {len(rows[next(iter(rows))][g])} sets" for g in groups) + "), and all sets:")  # fmt: skip
    ship = rows[next(iter(RULES))]
    for name, by in rows.items():
        allv = sum(by.values(), [])
        better = sum(x > y + 1e-9 for x, y in zip(allv, sum(ship.values(), []), strict=True))
        print(f"  {name:40s} " + "  ".join(f"{np.mean(by[g]):.3f}" for g in groups)
              + f"   all {np.mean(allv):.3f}   better than shipped on {better} of {len(allv)}")  # fmt: skip


if __name__ == "__main__":
    main()
