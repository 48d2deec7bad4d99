"""The figure of merit's weights chosen per run, from the reference micrograph. Dev sets only.

The figure of merit mixes three opinions with fixed weights (MAE cosine 0.1, template NCC 0.4,
view 0.5). Some targets are told apart better by one opinion, some by another. The reference
micrograph holds the exemplars (positives) among candidates that are mostly not the target, so
each weighting can be scored there: the AUC of the exemplars' candidates against the reference's
other candidates, every opinion read leave-one-out (an exemplar's MAE cosine, view score and
template NCC without that exemplar). The run then uses the weighting with the highest such AUC.

This script first measures what choosing could gain at most: every weighting of the grid on the
queries, and the best per set (chosen from the truth: a ceiling). Then the reference's choice.
Stage 2 runs again from each dev set's ``picker.pt`` with the three opinions kept apart; the
opinions are cached in ``<set>/weights_per_run.pkl``.

    cd benchmarks && ../.venv/bin/python choose_pick_weights_per_run.py [--runs ../runs]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
from choose_pick_background_views import candidate_kinds, dev_runs, dev_truth
from choose_pick_nms import evaluate
from scipy.spatial import cKDTree
from sklearn.metrics import roc_auc_score

from cryoshot.io.star import read_star_table
from cryoshot.picking.merit import fuse_scores
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import candidate_picks, greedy_nms, windows_at
from cryoshot.picking.template import exemplar_template, ncc_at, ncc_map
from cryoshot.picking.views import crops_at, embed_crops, view_search
from cryoshot.picking.workflow import PickConfig, _load_picker, _view_of
from cryoshot.utils.threads import configure_threads

GRID = [(t, v) for t in (0.0, 0.2, 0.4, 0.6, 0.8) for v in (0.0, 0.2, 0.4, 0.5, 0.6, 0.8) if t + v <= 1.0 + 1e-9]
SHIPPED = (0.4, 0.5)


def opinions(ds: Path, target: str, typed: float) -> list[dict]:
    """Every micrograph's candidates (input px), their three opinions, and (queries) the target particles; the
    reference's (the first micrograph's) opinions are read leave-one-out for candidates on an exemplar."""
    cache = ds / "weights_per_run_loo.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    net, ex_feats, template, views = _load_picker(str(next(ds.glob("**/picker.pt"))))
    cfg = PickConfig(diameter_A=typed)
    truth = dev_truth(ds)
    ex = read_star_table(ds / "ex.star")[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
    out = []
    for m, path in enumerate(sorted(ds.glob("mic_*.mrc"))):
        img, ps = read_micrograph(path)
        b = bin_micrograph(img, ps, cfg.work_diameter_A, net.config.particle_px)
        v = _view_of(img, ps, views, cfg)
        d = net.config.particle_px
        exclude = (b.to_binned(ex), 0.5 * d) if m == 0 else None
        xy, cos, _ = candidate_picks(net, b.image, ex_feats, cfg.stride_px, cfg.nms_distance, cfg.matching,
                                     exclude=exclude)  # fmt: skip
        xin, vs = view_search(views, v, b.to_input(xy), cfg.view_shift_px)
        entry = {"xy": xin, "cos": cos, "ncc": ncc_at(ncc_map(b.image, template), b.to_binned(xin)), "view": vs,
                 "d_px": typed / ps, "nms_px": cfg.nms_distance * d * b.factor}  # fmt: skip
        if m == 0:  # the view score of a candidate on an exemplar, without that exemplar
            dist, j = cKDTree(ex).query(xin)
            on = dist <= 0.25 * typed / ps
            e = embed_crops(views.net, crops_at(v, xin[on], views.net.cfg.box_px), views.polarity).astype(float)
            c = e @ views.features.T.astype(float)
            c[np.arange(len(c)), j[on]] = -np.inf
            entry["view"] = vs.copy()
            entry["view"][on] = np.sort(c, axis=1)[:, -3:].mean(axis=1)
            entry["positive"] = on
            # and its template NCC with a template made without it
            wins = windows_at(b.image, b.to_binned(ex), template.shape[0])
            loo = {i: ncc_map(b.image, exemplar_template(np.delete(wins, i, axis=0))) for i in np.unique(j[on])}
            entry["ncc_loo"] = entry["ncc"].copy()
            for k in np.nonzero(on)[0]:
                entry["ncc_loo"][k] = ncc_at(loo[j[k]], b.to_binned(xin[k : k + 1]))[0]
        else:
            entry["truth"] = candidate_kinds(truth, path.name, xin, target, typed / ps)[1]
        out.append(entry)
    cache.write_bytes(pickle.dumps(out))
    return out


def merit_of(e: dict, w: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(xy, merit) of one micrograph's candidates under weights ``w`` (template, view), best first, suppressed."""
    merit = fuse_scores(e["cos"], [(e["ncc"], w[0]), (e["view"], w[1])])
    o = np.argsort(-merit, kind="stable")
    keep = greedy_nms(e["xy"][o], e["nms_px"])
    return e["xy"][o][keep], merit[o][keep]


def query_f1(qs: list[dict], w: tuple[float, float]) -> tuple[float, float]:
    """F1 over the queries at the pooled gmm3 cut and at each query's best threshold."""
    ranked = [dict(zip(("xy", "merit"), merit_of(q, w), strict=True), truth=q["truth"], d_px=q["d_px"]) for q in qs]
    return evaluate(ranked)[:2]


def reference_auc(ref: dict, w: tuple[float, float]) -> float:
    """AUC of the reference's exemplar candidates against its other candidates under weights ``w``."""
    merit = fuse_scores(ref["cos"], [(ref.get("ncc_loo", ref["ncc"]), w[0]), (ref["view"], w[1])])
    return float(roc_auc_score(ref["positive"], merit))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    configure_threads()
    rows = []
    for group, ds, target, typed in dev_runs(a.runs):
        mics = opinions(ds, target, typed)
        ref, qs = mics[0], mics[1:]
        f = {w: query_f1(qs, w) for w in GRID}
        auc = {w: reference_auc(ref, w) for w in GRID}
        chosen = max(GRID, key=lambda w: auc[w])
        best = max(GRID, key=lambda w: f[w][0])
        rows.append((group, f[SHIPPED][0], f[chosen][0], f[best][0], f[SHIPPED][1], f[chosen][1]))
        print(f"{group}: {ds.name} ({target}): shipped {f[SHIPPED][0]:.3f} / {f[SHIPPED][1]:.3f} (ref AUC "
              f"{auc[SHIPPED]:.3f}); reference's choice {chosen} {f[chosen][0]:.3f} / {f[chosen][1]:.3f} (ref AUC "
              f"{auc[chosen]:.3f}); best on the queries {best} {f[best][0]:.3f} / {f[best][1]:.3f}", flush=True)  # fmt: skip
    r = np.array([x[1:] for x in rows])
    print(f"\nmean F1 at the cut: shipped {r[:, 0].mean():.3f}, reference's choice {r[:, 1].mean():.3f} (better on "
          f"{(r[:, 1] > r[:, 0] + 1e-9).sum()}, worse on {(r[:, 1] < r[:, 0] - 1e-9).sum()} of {len(r)}), best per set "
          f"(ceiling) {r[:, 2].mean():.3f}; at the best threshold: shipped {r[:, 3].mean():.3f}, reference's choice "
          f"{r[:, 4].mean():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
