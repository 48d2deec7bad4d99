"""Other ways to place and cut ``cryoshot pick``'s candidates, tried on the dev sets and not adopted.

Dev sets only (the procedural sets of ``choose_pick_procedural.py`` and the training-map sets
of ``choose_pick_cut.py``; their cut.pkl caches must exist); F1 with the gmm3 cut, and the share
of target particles that some candidate matches (IoU >= 0.5) before any cut.

1. Re-centring each MAE peak on the template NCC's highest value within r diameters
   (r = 0: the peaks as they are), or adding the NCC map's own peaks to the candidates
   ("union"); NMS by the figure of merit afterwards. (The view network's re-centring, which
   was adopted, is ``choose_pick_shift.py``.)
2. A Gaussian mixture on the three opinions together (cosine, NCC, view score, each
   standardised), keeping the component(s) with the highest figure of merit, against gmm3 on
   the one-dimensional figure of merit.
3. The figure of merit's weights again, now under the gmm3 cut (they were chosen under gmm).

    cd benchmarks && ../.venv/bin/python choose_pick_candidates.py [--runs ../runs]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from bench_picking import typed_diameter_A
from choose_pick_cut import merit
from choose_pick_shift import cached_dev_data
from sklearn.mixture import GaussianMixture

from cryoshot.picking.matching import MatchCounts, count_matches, match_picks
from cryoshot.picking.merit import fuse_scores, standardise_scores
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import candidate_picks, greedy_nms, peaks
from cryoshot.picking.template import ncc_at, ncc_map
from cryoshot.picking.threshold import auto_threshold
from cryoshot.picking.views import view_image, view_scores
from cryoshot.picking.workflow import PickConfig, _load_picker
from cryoshot.utils.threads import configure_threads

RADII = (0.0, 0.1, 0.2, 0.3, 0.4)  # diameters


def recentre(ncc: np.ndarray, xy: np.ndarray, r: float) -> np.ndarray:
    """(N, 2) binned peaks moved to the highest NCC within ``r`` binned px (kept where the disc leaves the image)."""
    out = xy.copy()
    if r <= 0:
        return out
    ri = int(np.ceil(r))
    yy, xx = np.mgrid[-ri : ri + 1, -ri : ri + 1]
    disc = yy**2 + xx**2 <= r * r
    for i, (x, y) in enumerate(xy):
        cx, cy = int(round(x)), int(round(y))
        if cy - ri < 0 or cx - ri < 0 or cy + ri + 1 > ncc.shape[0] or cx + ri + 1 > ncc.shape[1]:
            continue
        patch = np.where(disc, ncc[cy - ri : cy + ri + 1, cx - ri : cx + ri + 1], -np.inf)
        j = np.unravel_index(np.argmax(patch), patch.shape)
        out[i] = (cx - ri + j[1], cy - ri + j[0])
    return out


def collect(ds: Path, d: dict) -> dict:
    """Per query: the candidates (input px) and their opinions for each radius and for the union."""
    net, ex_feats, template, views = _load_picker(str(ds / "cut_stage1" / "picker.pt"))
    cfg = PickConfig(diameter_A=typed_diameter_A(d["key"].split("_")[0]))
    p = net.config.particle_px
    per: dict = {r: [] for r in RADII} | {"union": []}
    for m in sorted(ds.glob("mic_*.mrc"))[1:]:
        img, ps = read_micrograph(m)
        b = bin_micrograph(img, ps, cfg.diameter_A, p)
        xy, cos, (smap, xs, ys) = candidate_picks(net, b.image, ex_feats, cfg.stride_px, cfg.nms_distance, cfg.matching)
        ncc = ncc_map(b.image, template)
        v = view_image(img, ps, views.net, cfg.diameter_A, views.view_pixel_A)
        for r in RADII:
            xin = b.to_input(nxy := recentre(ncc, xy, r * p))
            per[r].append({"xy": xin, "cos": cos, "ncc": ncc_at(ncc, nxy), "view": view_scores(views, v, xin)})
        grid = np.arange(ncc.shape[1], dtype=float), np.arange(ncc.shape[0], dtype=float)
        nxy, _ = peaks(ncc, *grid, cfg.nms_distance * p)
        step = xs[1] - xs[0]  # the NCC peaks' cosine: the nearest window of the MAE's map
        ix = np.clip(np.rint((nxy[:, 0] - xs[0]) / step).astype(int), 0, len(xs) - 1)
        iy = np.clip(np.rint((nxy[:, 1] - ys[0]) / step).astype(int), 0, len(ys) - 1)
        both = np.concatenate([xy, nxy])
        xin = b.to_input(both)
        per["union"].append({"xy": xin, "cos": np.concatenate([cos, smap[iy, ix]]), "ncc": ncc_at(ncc, both),
                             "view": view_scores(views, v, xin)})  # fmt: skip
    return per


def f1_and_reach(d: dict, qs: list, keep_rule, nms: bool) -> tuple[float, float]:
    tot, hit, n = MatchCounts(0, 0, 0), 0, 0
    for q, truth in zip(qs, (q["truth"] for q in d["queries"]), strict=True):
        m = fuse_scores(q["cos"], [(q["ncc"], 0.4), (q["view"], 0.5)])
        o = np.argsort(-m, kind="stable")
        xy, m, sub = q["xy"][o], m[o], {k: np.asarray(q[k])[o] for k in ("cos", "ncc", "view")}
        if nms:
            k = greedy_nms(xy, 0.7 * d["side"])
            xy, m, sub = xy[k], m[k], {key: val[k] for key, val in sub.items()}
        hit += int(match_picks(xy, truth, d["side"], m).sum())
        n += len(truth)
        keep = keep_rule(m, sub)
        tot = tot + count_matches(xy[keep], truth, d["side"], m[keep])
    return tot.f1, hit / max(n, 1)


def gmm3(m, _):
    return m >= auto_threshold(m, "gmm3", fisher=False)


def mixture_3d(n: int, cov: str, top: int = 1):
    """Keep candidates whose posterior of the ``top`` components with the highest figure of merit is >= 0.5."""
    w = np.array([0.1, 0.4, 0.5])

    def rule(m, s):
        x = np.stack([standardise_scores(np.arctanh(np.clip(s["cos"], -0.999999, 0.999999))),
                      standardise_scores(s["ncc"]), standardise_scores(s["view"])], 1)  # fmt: skip
        if len(x) < 3 * n:
            return np.ones(len(x), bool)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = GaussianMixture(n, covariance_type=cov, random_state=0).fit(x)
        best = np.argsort(-(gm.means_ @ w))[:top]
        return gm.predict_proba(x)[:, best].sum(1) >= 0.5

    return rule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    configure_threads()
    data = cached_dev_data(a.runs, "candidates.pkl", collect)
    groups = list(dict.fromkeys(g for g, *_ in data))

    def line(name, get_qs, rule, nms):
        res = {g: [f1_and_reach(d, get_qs(d, c), rule, nms) for gg, d, c in data if gg == g] for g in groups}
        print(f"  {name:44s} " + "  ".join(f"{g} {np.mean([f for f, _ in v]):.3f} / {np.mean([h for _, h in v]):.3f}"
                                          for g, v in res.items()), flush=True)  # fmt: skip

    print("\n1. where the candidates are: mean F1 (gmm3) / share of target particles some candidate matches")
    line("MAE peaks as they are (cached)", lambda d, c: d["queries"], gmm3, False)
    for r in RADII:
        line(f"re-centred on the NCC within {r:g} diameters", lambda d, c, r=r: c[r], gmm3, True)
    line("MAE peaks + the NCC map's peaks", lambda d, c: c["union"], gmm3, True)
    print("\n2. the cut: mean F1 / share matched (unchanged)")
    line("gmm3 on the figure of merit (shipped)", lambda d, c: d["queries"], gmm3, False)
    for n, cov, top in ((2, "full", 1), (2, "diag", 1), (3, "full", 1), (3, "diag", 1), (4, "full", 1), (4, "diag", 1),
                        (4, "full", 2)):  # fmt: skip
        line(
            f"3D mixture, {n} components ({cov}), top {top}", lambda d, c: d["queries"], mixture_3d(n, cov, top), False
        )
    print("\n3. the weights (NCC, view; the cosine gets the rest) under gmm3 / gmm: mean F1 over the 19 sets")
    cfg = PickConfig(diameter_A=100.0)
    for wn, wv in ((0.2, 0.5), (0.3, 0.4), (0.3, 0.5), (0.3, 0.6), (0.4, 0.4), (0.4, 0.5), (0.4, 0.6), (0.5, 0.4)):
        cfg.template_weight, cfg.view_weight = wn, wv
        out = []
        for rule in ("gmm3", "gmm"):
            f = []
            for _, d, _ in data:
                tot = MatchCounts(0, 0, 0)
                for q in d["queries"]:
                    m = merit(q, cfg)
                    keep = m >= auto_threshold(m, rule, fisher=False)
                    tot = tot + count_matches(q["xy"][keep], q["truth"], d["side"], m[keep])
                f.append(tot.f1)
            out.append(np.mean(f))
        print(
            f"  NCC {wn:.1f}, view {wv:.1f}: {out[0]:.3f} / {out[1]:.3f}"
            + ("  (shipped)" if (wn, wv) == (0.4, 0.5) else "")
        )


if __name__ == "__main__":
    main()
