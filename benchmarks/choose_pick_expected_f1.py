"""Where to cut the pooled mixture: at posterior 0.5, or where the F1 it predicts is highest.

``--threshold auto`` fits three Gaussian components to the figures of merit of all query
candidates and keeps those whose posterior of the top component reaches 0.5. That cut ignores how
many candidates the top component holds. The mixture also predicts, for any threshold t, the
expected true positives (the sum of the top component's posteriors above t), the picks (the
candidates above t) and the truths (the sum of all its posteriors), and so an expected F1. Cutting
where that is highest weighs recall against precision as the metric does.

Every rule cuts the same candidates: those a finished ``cryoshot pick`` run wrote
(``candidates/*_candidates.star``). Dev sets only (training structures), as in
``choose_pick_background_views.py``: the second simulator's 4 dev sets and the 10 training-map
sets of ``choose_flatten.py --amps 1 --flatten 1``. F1 over the queries (every micrograph but the
first).

    cd benchmarks && ../.venv/bin/python choose_pick_expected_f1.py [--runs ../runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_picking import oracle_f1
from choose_pick_background_views import candidate_kinds, dev_runs, dev_truth

from cryoshot.io.mrc import read_mrc
from cryoshot.io.star import read_star_table
from cryoshot.picking.matching import MatchCounts, count_matches
from cryoshot.picking.threshold import gmm_threshold


def expected_f1_threshold(scores: np.ndarray, seed: int = 0, components: int = 3) -> float:
    """Gaussian mixture on the scores, cut where the F1 it predicts is highest.

    The top component's posterior p_i of each score is the chance that it is a true particle. Keeping
    the j best then expects sum(p over them) true positives among j picks, out of sum(p over all)
    particles: an expected F1 of 2 sum_kept(p) / (j + sum_all(p)), highest at the cut returned.
    """
    from sklearn.mixture import GaussianMixture

    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if len(s) < 2 * components:
        return float(s.min()) if len(s) else np.inf
    gm = GaussianMixture(components, random_state=seed).fit(s[:, None])
    p = gm.predict_proba(s[:, None])[:, int(np.argmax(gm.means_[:, 0]))]
    f1 = 2 * np.cumsum(p) / (np.arange(1, len(s) + 1) + p.sum())
    return float(s[int(np.argmax(f1))])


def bic_components(s: np.ndarray, ks=(2, 3, 4)) -> int:
    """The number of Gaussian components (of ``ks``) with the lowest BIC on the scores ``s``."""
    from sklearn.mixture import GaussianMixture

    return ks[int(np.argmin([GaussianMixture(k, random_state=0).fit(s[:, None]).bic(s[:, None]) for k in ks]))]


def queries(ds: Path, target: str, typed: float, run: Path | None = None) -> list[dict]:
    """Each query micrograph's candidates (xy, merit) and its target particles, from the run in ``run`` (default:
    the dev set's own)."""
    run = run or next(ds.glob("**/picker.pt")).parent
    truth = dev_truth(ds)
    out = []
    for mic in sorted(ds.glob("mic_*.mrc"))[1:]:
        ps = read_mrc(mic, mmap=True).voxel_size_A
        c = read_star_table(run / "candidates" / f"{mic.stem}_candidates.star")
        xy = c[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
        _, targets = candidate_kinds(truth, mic.name, xy, target, typed / ps)
        out.append({"xy": xy, "merit": c["rlnAutopickFigureOfMerit"].to_numpy(float), "truth": targets,
                    "d_px": typed / ps})  # fmt: skip
    return out


def f1_at(qs: list[dict], t: float) -> MatchCounts:
    """Counts over the queries ``qs`` (as :func:`queries` gives them) at the one threshold ``t``."""
    return sum((count_matches(q["xy"][q["merit"] >= t], q["truth"], q["d_px"], q["merit"][q["merit"] >= t])
                for q in qs), MatchCounts(0, 0, 0))  # fmt: skip


def best_threshold_counts(qs: list[dict]) -> MatchCounts:
    """Counts over the queries ``qs`` at each one's best threshold (chosen from the truth: an upper bound)."""
    total = MatchCounts(0, 0, 0)
    for q in qs:
        o = np.argsort(-q["merit"])
        total = total + oracle_f1(q["xy"][o], q["merit"][o], q["truth"], q["d_px"])[0]
    return total


RULES = {
    "gmm3 pooled, posterior 0.5 (shipped)": lambda s: gmm_threshold(s, components=3),
    "gmm3 pooled, expected-F1 maximum": lambda s: expected_f1_threshold(s, components=3),
    "gmm pooled, expected-F1 maximum": lambda s: expected_f1_threshold(s, components=2),
    "gmm4 pooled, expected-F1 maximum": lambda s: expected_f1_threshold(s, components=4),
    "gmm4 pooled, posterior 0.5": lambda s: gmm_threshold(s, components=4),
    "gmm 2-4 by BIC, posterior 0.5": lambda s: gmm_threshold(s, components=bic_components(s)),
    "gmm 3-4 by BIC, posterior 0.5": lambda s: gmm_threshold(s, components=bic_components(s, (3, 4))),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    table: dict[str, list[float]] = {}
    for group, ds, target, typed in dev_runs(a.runs):
        qs = queries(ds, target, typed)
        s = np.concatenate([q["merit"] for q in qs])
        res = {}
        for name, rule in RULES.items():
            t = rule(s)
            c = f1_at(qs, t)
            res[name] = (c.f1, c.n_picks / max(1, c.n_truth))
        grid = np.quantile(s, np.linspace(0.5, 0.999, 200))
        best = max((f1_at(qs, t) for t in grid), key=lambda c: c.f1)
        res["one threshold for all queries (oracle)"] = (best.f1, best.n_picks / max(1, best.n_truth))
        res["best threshold per micrograph (oracle)"] = (best_threshold_counts(qs).f1, np.nan)
        print(f"{group}: {ds.name} ({target}): " + "; ".join(f"{k} {v[0]:.3f} ({v[1]:.2f} picks/truth)"
                                                            for k, v in res.items()), flush=True)  # fmt: skip
        for k, v in res.items():
            table.setdefault(k, []).append(v[0])
    ref = np.array(table["gmm3 pooled, posterior 0.5 (shipped)"])
    print("\nmean F1 over the dev sets; sets better / worse than shipped")
    for k, v in table.items():
        v = np.array(v)
        print(f"  {k:45s} {v.mean():.3f}  better {(v > ref + 1e-9).sum()} worse {(v < ref - 1e-9).sum()} of {len(v)}")


if __name__ == "__main__":
    main()
