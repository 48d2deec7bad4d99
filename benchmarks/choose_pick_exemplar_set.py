"""What else the 15 exemplars could tell ``cryoshot pick``: more views, and a per-run choice of cut. Tried, not adopted.

Dev sets only (the procedural sets of ``choose_pick_procedural.py`` and the training-map sets of
``choose_pick_cut.py``; their cached candidates, cut.pkl, must exist). Every variant re-scores
the same candidates and cuts them with gmm3; mean F1 per group.

1. A larger exemplar set for the view opinion: the exemplars' mirror images (a projection seen
   from the opposite side is the mirrored projection, and the polar network is not mirror
   invariant), the 6 best view-score neighbours, and pseudo-exemplars (the top K candidates
   of each query micrograph, or of the reference, by the first figure of merit).
2. A per-run check between gmm and gmm3: score the exemplars on the reference micrograph
   leave-one-out (MAE cosine with ``exclude``, a template without the exemplar, view cosines
   without it) and use gmm3 only when it keeps at least a share rho of them.

    cd benchmarks && ../.venv/bin/python choose_pick_exemplar_set.py [--runs ../runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_picking import typed_diameter_A
from choose_pick_cut import merit
from choose_pick_shift import cached_dev_data
from scipy.spatial import cKDTree

from cryoshot.io.star import read_star_table
from cryoshot.picking.matching import MatchCounts, count_matches
from cryoshot.picking.merit import fuse_scores
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import candidate_picks, windows_at
from cryoshot.picking.template import exemplar_template, ncc_at, ncc_map
from cryoshot.picking.threshold import auto_threshold
from cryoshot.picking.views import VIEW_TOP, crops_at, embed_crops, view_image, view_scores
from cryoshot.picking.workflow import PickConfig, _load_picker
from cryoshot.utils.threads import configure_threads

W_NCC, W_VIEW = 0.4, 0.5


def mirror(c: np.ndarray) -> np.ndarray:
    """Boxes mirrored about the network's centre pixel ``box // 2`` (an even box: flip, then shift one)."""
    f = c[..., ::-1]
    return np.roll(f, 1, axis=-1) if c.shape[-1] % 2 == 0 else f


def collect(ds: Path, d: dict) -> tuple[dict, dict]:
    """View embeddings (exemplars, mirrored exemplars, reference and query candidates), and the
    reference's candidates scored leave-one-out with the exemplar each belongs to."""
    net, ex_feats, template, views = _load_picker(str(ds / "cut_stage1" / "picker.pt"))
    cfg = PickConfig(diameter_A=typed_diameter_A(d["key"].split("_")[0]))
    p, box = net.config.particle_px, views.net.cfg.box_px
    mics = sorted(ds.glob("mic_*.mrc"))
    ex = read_star_table(ds / "ex.star")[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
    img, ps = read_micrograph(mics[0])
    v = view_image(img, ps, views.net, cfg.diameter_A, views.view_pixel_A)
    b = bin_micrograph(img, ps, cfg.diameter_A, p)
    cr = crops_at(v, ex, box)
    emb = {
        "ex": embed_crops(views.net, cr, views.polarity),
        "ex_mirror": embed_crops(views.net, mirror(cr), views.polarity),
    }
    xy, cos, _ = candidate_picks(net, b.image, ex_feats, cfg.stride_px, cfg.nms_distance, cfg.matching)
    xin = b.to_input(xy)
    emb["ref"] = {"cos": cos, "ncc": ncc_at(ncc_map(b.image, template), xy), "view": view_scores(views, v, xin),
                  "emb": embed_crops(views.net, crops_at(v, xin, box), views.polarity)}  # fmt: skip
    emb["q"] = []
    for m, q in zip(mics[1:], d["queries"], strict=True):
        qi, qps = read_micrograph(m)
        emb["q"].append(embed_crops(views.net, crops_at(view_image(qi, qps, views.net, cfg.diameter_A, views.view_pixel_A), q["xy"], box),
                                    views.polarity))  # fmt: skip
    # leave-one-out on the reference: each exemplar scored as a query candidate would be, without itself
    exb = b.to_binned(ex)
    xy, cos, _ = candidate_picks(net, b.image, ex_feats, cfg.stride_px, cfg.nms_distance, cfg.matching,
                                 exclude=(exb, 0.5 * p))  # fmt: skip
    dist, owner = cKDTree(exb).query(xy)
    owner = np.where(dist <= 0.5 * p, owner, -1)
    win = windows_at(b.image, exb, net.config.window_px)
    ncc = ncc_at(ncc_map(b.image, template), xy)
    for i in range(len(exb)):
        if (owner == i).any():
            ncc[owner == i] = ncc_at(ncc_map(b.image, exemplar_template(np.delete(win, i, axis=0))), xy[owner == i])
    c = embed_crops(views.net, crops_at(v, b.to_input(xy), box), views.polarity).astype(np.float64)
    c = c @ views.features.T.astype(np.float64)
    for j in np.nonzero(owner >= 0)[0]:
        c[j, owner[j]] = -np.inf
    loo = {"cos": cos, "ncc": ncc, "view": np.sort(c, 1)[:, -VIEW_TOP:].mean(1), "owner": owner, "n_ex": len(ex)}
    return emb, loo


def topk(e: np.ndarray, feats: np.ndarray, k: int = VIEW_TOP) -> np.ndarray:
    c = e.astype(np.float64) @ feats.T.astype(np.float64)
    return np.sort(c, 1)[:, -min(k, c.shape[1]) :].mean(1)


def view_variant(name: str, q: dict, e: np.ndarray, a: dict) -> np.ndarray:
    """One query micrograph's view scores (N,) under variant ``name``."""
    ex = a["ex"]
    if name == "exemplars (shipped)":
        return topk(e, ex)
    if name.startswith("with mirrored"):
        return topk(e, np.concatenate([ex, a["ex_mirror"]]), 6 if "6" in name else VIEW_TOP)
    k = int(name.split()[-1])
    if name.startswith("pseudo, query"):  # the micrograph's own top k, each not matched with itself
        top = np.argsort(-fuse_scores(q["cos"], [(q["ncc"], W_NCC), (topk(e, ex), W_VIEW)]))[:k]
        c = e.astype(np.float64) @ np.concatenate([ex, e[top]]).T
        c[top, len(ex) + np.arange(len(top))] = -np.inf
        return np.sort(c, 1)[:, -VIEW_TOP:].mean(1)
    r = a["ref"]  # pseudo, reference: its top k by the first figure of merit
    top = np.argsort(-fuse_scores(r["cos"], [(r["ncc"], W_NCC), (topk(r["emb"], ex), W_VIEW)]))[:k]
    return topk(e, np.concatenate([ex, r["emb"][top]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    configure_threads()
    data = [(group, d, *cached) for group, d, cached in cached_dev_data(a.runs, "exemplar_set.pkl", collect)]
    groups = list(dict.fromkeys(g for g, *_ in data))
    cfg = PickConfig(diameter_A=100.0)  # only the figure-of-merit weights are read

    def f1(d: dict, scores, rule: str) -> float:
        tot = MatchCounts(0, 0, 0)
        for i, q in enumerate(d["queries"]):
            m = scores(i, q)
            keep = m >= auto_threshold(m, rule, fisher=False)
            tot = tot + count_matches(q["xy"][keep], q["truth"], d["side"], m[keep])
        return tot.f1

    print("\n1. the view opinion's exemplar set: mean F1 (gmm3)")
    for name in ("exemplars (shipped)", "with mirrored", "with mirrored, top 6", "pseudo, query 10", "pseudo, query 20",
                 "pseudo, query 40", "pseudo, reference 10", "pseudo, reference 20", "pseudo, reference 40"):  # fmt: skip
        cells = []
        for g in groups:
            f = [f1(d, lambda i, q, d=d, e=e, name=name: fuse_scores(q["cos"], [(q["ncc"], W_NCC),
                                                                    (view_variant(name, q, e["q"][i], e), W_VIEW)]),
                    "gmm3") for gg, d, e, _ in data if gg == g]  # fmt: skip
            cells.append(f"{g} {np.mean(f):.3f}")
        print(f"  {name:24s} " + "  ".join(cells), flush=True)

    print("\n2. gmm3 only when it keeps at least rho of the exemplars on the reference (leave-one-out), else gmm")
    rows = []
    for g, d, _, loo in data:
        m = fuse_scores(loo["cos"], [(loo["ncc"], W_NCC), (loo["view"], W_VIEW)])
        exm = np.full(loo["n_ex"], -np.inf)
        for j in np.nonzero(loo["owner"] >= 0)[0]:
            exm[loo["owner"][j]] = max(exm[loo["owner"][j]], m[j])
        kept3 = float(np.mean(exm >= auto_threshold(m, "gmm3", fisher=False)))
        f = {r: f1(d, lambda i, q: merit(q, cfg), r) for r in ("gmm", "gmm3")}
        rows.append((g, kept3, f))
    for rho in (0.0, 0.5, 0.6, 0.7, 0.8, 0.9):
        cells = [
            f"{g} {np.mean([f['gmm3'] if k >= rho else f['gmm'] for gg, k, f in rows if gg == g]):.3f}" for g in groups
        ]
        print(f"  rho {rho:.1f}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
