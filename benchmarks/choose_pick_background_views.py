"""The view opinion with a background bank: which reference candidates, and how much to take off. Tried, not adopted.

The view opinion of ``cryoshot pick`` is a candidate's mean cosine to its 3 most similar exemplars
in the Siamese network's embedding. Here it also loses ``lam`` x its mean cosine to its ``top``
closest *background views*: the reference micrograph's candidates (at least half a diameter from
every exemplar) whose own view score lies below the quantile ``q`` of theirs. Everything else of
the figure of merit (the MAE's cosine and the template's NCC, 0.5 of it) is kept as the run wrote
it: it is the candidate's written figure of merit less 0.5 x its standardised view score, recomputed
here. Every variant re-scores the same candidates (those of a finished ``cryoshot pick`` run as
shipped before the change) and cuts them with the shipped pooled gmm3; F1 over the queries, at
that cut and at each query's best threshold, and the AUC of the view score for target against
distractor candidates and against all others.

Dev sets only (training structures): the second simulator's 4 dev sets (``othersim_picking.py
--dev``) and the 10 training-map sets of ``choose_flatten.py --amps 1 --flatten 1``, each with its
``cryoshot pick`` run.

    cd benchmarks && ../.venv/bin/python choose_pick_background_views.py [--runs ../runs]

The setting it chose (q 0.25, weight 0.5, top 3; +0.010 F1 on these dev sets) was then built into
``cryoshot pick`` and run on the test sets, where it gained nothing (docs/benchmarks.md, "A background
bank for the view opinion"), so the shipped picker does not have it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from bench_picking import oracle_f1, typed_diameter_A
from choose_flatten import DEV_SETS, MORE_SETS
from scipy.spatial import cKDTree
from sklearn.metrics import roc_auc_score

from cryoshot.io.star import read_star_table
from cryoshot.picking.matching import MatchCounts, count_matches
from cryoshot.picking.merit import standardise_scores
from cryoshot.picking.micrograph import read_micrograph
from cryoshot.picking.threshold import rule_thresholds
from cryoshot.picking.views import VIEW_TOP, crops_at, embed_crops, view_image
from cryoshot.picking.workflow import VIEW_WEIGHT, PickConfig, _load_picker
from cryoshot.utils.threads import configure_threads

QUANTILES = (0.25, 0.5, 0.75)
WEIGHTS = (0.5, 1.0)
TOPS = (1, 3, 10)


def top_cosine(e: np.ndarray, bank: np.ndarray, top: int) -> np.ndarray:
    """(N,) the mean of each embedding's ``top`` highest cosines to ``bank`` (k, E); ``e`` (N, E), both unit-norm."""
    cos = np.asarray(e, np.float64) @ np.asarray(bank, np.float64).T
    return np.sort(cos, axis=1)[:, -min(top, cos.shape[1]) :].mean(axis=1)


def dev_runs(runs: Path) -> list[tuple[str, Path, str, float]]:
    """(group, dataset, target, typed diameter) of every dev set with a finished run."""
    out = []
    for ds in sorted((runs / "othersim_picking").glob("dev*")):
        meta = json.loads((ds / "config.json").read_text())
        target = meta["target"]
        out.append(("second simulator", ds, target, float(round(meta["diameters_A"][target] / 10) * 10)))
    for key in [f"{t}_snr{s:g}" for s in (0.02, 0.01) for t in {**DEV_SETS, **MORE_SETS}]:
        ds = runs / "choose_flatten" / f"{key}_a1"
        target = key.split("_")[0]
        out.append(("training maps", ds, target, typed_diameter_A(target)))
    return [o for o in out if any(o[1].glob("**/picker.pt"))]


def candidate_kinds(truth, name: str, xy: np.ndarray, target: str, d_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's kind (2 target, 1 distractor, 0 other: within 0.25 diameters ``d_px`` of a particle of
    micrograph ``name`` in the ``truth`` table, or not) and the target particles' (n, 2) coordinates."""
    t = truth[truth["rlnMicrographName"] == name]
    txy, names = t[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(), t["cryoshotStructureName"].to_numpy()
    kind = np.zeros(len(xy), int)
    if len(txy):
        d, j = cKDTree(txy).query(xy)
        kind = np.where(d <= 0.25 * d_px, np.where(names[j] == target, 2, 1), 0)
    return kind, txy[names == target]


def dev_truth(ds: Path) -> pd.DataFrame:
    """A dev set's truth table: every particle (``coordinates.star``) where written, else the queries'."""
    return read_star_table(ds / "coordinates.star" if (ds / "coordinates.star").exists() else ds / "truth_queries.star")


def open_dev_set(ds: Path, typed: float) -> tuple[Path, tuple, PickConfig, pd.DataFrame, np.ndarray]:
    """A dev set's finished run: its folder, its ``picker.pt`` as ``_load_picker`` gives it, the run's config (the
    typed diameter), the truth table and the exemplars' (m, 2) coordinates on the first micrograph."""
    run = next(ds.glob("**/picker.pt")).parent
    ex = read_star_table(ds / "ex.star")[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
    return run, _load_picker(str(run / "picker.pt")), PickConfig(diameter_A=typed), dev_truth(ds), ex


def load(ds: Path, target: str, typed: float) -> tuple[list[dict], np.ndarray]:
    """Every micrograph's candidates with their view embeddings and kind (2 target, 1 distractor, 0 other)."""
    run, (_, _, _, views), cfg, truth, ex = open_dev_set(ds, typed)
    mics = []
    for m, mic in enumerate(sorted(ds.glob("mic_*.mrc"))):
        img, ps = read_micrograph(mic)
        v = view_image(img, ps, views.net, cfg.work_diameter_A, views.view_pixel_A)
        c = read_star_table(run / "candidates" / f"{mic.stem}_candidates.star")
        xy = c[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
        e = embed_crops(views.net, crops_at(v, xy, views.net.cfg.box_px), views.polarity).astype(np.float64)
        d_px = typed / ps
        kind, targets = candidate_kinds(truth, mic.name, xy, target, d_px)
        mics.append({"xy": xy, "merit": c["rlnAutopickFigureOfMerit"].to_numpy(float), "e": e, "kind": kind,
                     "truth": targets, "d_px": d_px,
                     "far": cKDTree(ex).query(xy)[0] >= 0.5 * d_px if m == 0 else None})  # fmt: skip
    return mics, views.features.astype(np.float64)


def cut_scores(
    mics: list[dict], merits: list[np.ndarray], values: list[np.ndarray]
) -> tuple[float, float, float, float]:
    """(F1 at the pooled gmm3 cut, F1 at each query's best threshold, AUC target/distractor, AUC target/other) of
    the queries (every micrograph but the first) ranked by ``merits``; the AUCs are those of ``values`` (one (N_i,)
    array per micrograph each)."""
    q, qm = mics[1:], merits[1:]
    th = rule_thresholds(qm, "gmm3-pooled", fisher=False)[0]
    cut, best = MatchCounts(0, 0, 0), MatchCounts(0, 0, 0)
    for m, s in zip(q, qm, strict=True):
        cut = cut + count_matches(m["xy"][s >= th], m["truth"], m["d_px"], s[s >= th])
        o = np.argsort(-s)
        best = best + oracle_f1(m["xy"][o], s[o], m["truth"], m["d_px"])[0]
    k, v = np.concatenate([m["kind"] for m in q]), np.concatenate(values[1:])

    def auc(neg):
        return roc_auc_score(np.r_[np.ones((k == 2).sum()), np.zeros(neg.sum())], np.r_[v[k == 2], v[neg]])

    return cut.f1, best.f1, auc(k == 1) if (k == 1).any() else np.nan, auc(k != 2)


def scored(mics: list[dict], views: list[np.ndarray], base: list[np.ndarray]) -> tuple[float, float, float, float]:
    """:func:`cut_scores` when the view scores ``base`` the run used are replaced by ``views`` (one (N_i,) array per
    micrograph each); the AUCs are the view scores'."""
    merits = [m["merit"] + VIEW_WEIGHT * (standardise_scores(v) - standardise_scores(b))
              for m, v, b in zip(mics, views, base, strict=True)]  # fmt: skip
    return cut_scores(mics, merits, views)


def print_means(table: dict[str, dict[str, list]], reference: str, what: str) -> None:
    """Mean over the dev sets of each variant's :func:`cut_scores` rows (``table[variant][group]``), per group and
    in all, and on how many sets its cut beats the variant ``reference``; ``what`` names the AUCs' score."""
    print(f"\nmean over the dev sets: F1 at the automatic cut / at the best threshold; {what}'s AUC target vs "
          f"distractor, vs all others; sets better (cut) than {reference}")  # fmt: skip
    ref = {g: np.array(v) for g, v in table[reference].items()}
    for name, groups in table.items():
        parts, allr, better = [], [], 0
        for g, rows in groups.items():
            r = np.array(rows)
            allr.append(r)
            better += int((r[:, 0] > ref[g][:, 0] + 1e-9).sum())
            parts.append(f"{g} {r[:, 0].mean():.3f} / {r[:, 1].mean():.3f}")
        r = np.concatenate(allr)
        print(f"  {name:30s} all {r[:, 0].mean():.3f} / {r[:, 1].mean():.3f}, AUC {np.nanmean(r[:, 2]):.3f} "
              f"{r[:, 3].mean():.3f}; {'; '.join(parts)}; better on {better} of {len(r)}", flush=True)  # fmt: skip


def run_screen(runs: Path, score_set: Callable[[Path, str, float], dict[str, tuple]], reference: str, what: str,
               shown: Sequence[str] | None = None) -> None:  # fmt: skip
    """Score every dev set of ``runs`` with ``score_set(dataset, target, typed diameter)`` (variant -> its
    :func:`cut_scores` row), print each set's F1 (of the variants ``shown``, default all) as it comes, then
    :func:`print_means` against the variant ``reference``."""
    table: dict[str, dict[str, list]] = {}
    for group, ds, target, typed in dev_runs(runs):
        res = score_set(ds, target, typed)
        keys = [k for k in res if shown is None or k in shown]
        print(f"{group}: {ds.name} ({target}, typed {typed:g} Å): "
              + "; ".join(f"{k} {res[k][0]:.3f} / {res[k][1]:.3f} AUC {res[k][2]:.3f}" for k in keys), flush=True)  # fmt: skip
        for name, r in res.items():
            table.setdefault(name, {}).setdefault(group, []).append(r)
    print_means(table, reference, what)


def variants(mics: list[dict], exf: np.ndarray) -> dict[str, tuple]:
    base = [top_cosine(m["e"], exf, VIEW_TOP) for m in mics]
    out = {"shipped view (no background)": scored(mics, base, base)}
    ref = mics[0]
    cands = ref["e"][ref["far"]]
    own = top_cosine(cands, exf, VIEW_TOP)
    for q in QUANTILES:
        bank = cands[own < np.quantile(own, q)]
        for lam in WEIGHTS:
            for top in TOPS:
                vs = [b - lam * top_cosine(m["e"], bank, top) for m, b in zip(mics, base, strict=True)]
                out[f"q {q:g}, weight {lam:g}, top {top}"] = scored(mics, vs, base)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    configure_threads()
    shipped = "shipped view (no background)"
    run_screen(a.runs, lambda ds, target, typed: variants(*load(ds, target, typed)), shipped, "the view score",
               shown=[shipped])  # fmt: skip


if __name__ == "__main__":
    main()
