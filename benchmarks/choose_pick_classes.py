"""Can 2D classification of the picks remove the other proteins the threshold keeps? Training structures.

After picking, a single-particle user runs 2D classification and throws away the classes that
are not their particle. The gmm cut of ``cryoshot pick`` keeps most target particles but also
many distractors (on the novel benchmark 550 picks for 180 targets at recall 0.96). This
script tries that clean-up on the cached candidates of ``choose_pick_cut.py`` (ten datasets of
training maps, seed 9191): the picks the gmm keeps on the 4 query micrographs, pooled, and the
15 exemplars are cut out at the Siamese network's grid (64 px at 5 Å/px, protein bright),
embedded, clustered (k-means on the embedding, optionally refined by multi-reference
alignment as ``cryoshot cluster`` does), and whole classes are kept or dropped by rules
that read only the exemplars. F1 over the queries against the target.

    cd benchmarks && ../.venv/bin/python choose_pick_classes.py [--root DIR] [--ks 8 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from choose_pick_cut import cached_sets, merit

from cryoshot.data.particles2d import standardise
from cryoshot.embedding.cluster import kmeans, reduce_dimensions
from cryoshot.embedding.mra import MRAConfig, mra_classify
from cryoshot.embedding.workflow import embed_images
from cryoshot.io.star import read_star_table
from cryoshot.picking.matching import MatchCounts, count_matches, match_picks
from cryoshot.picking.micrograph import read_micrograph
from cryoshot.picking.threshold import auto_threshold
from cryoshot.picking.views import crops_at, view_image
from cryoshot.picking.workflow import PickConfig, _load_picker
from cryoshot.utils.threads import configure_threads


def crops(ds: Path, d: dict, views) -> tuple[list[np.ndarray], np.ndarray]:
    """Standardised, protein-bright 64 px boxes of every query candidate (one array per query) and of the exemplars."""
    mics = sorted(ds.glob("mic_*.mrc"))
    box = views.net.cfg.box_px
    out = []
    for m, q in zip(mics[1:], d["queries"], strict=True):
        img, ps = read_micrograph(m)
        v = view_image(img, ps, views.net, d["side"] * 2.0, views.view_pixel_A)
        out.append(standardise(views.polarity * crops_at(v, q["xy"], box)))
    img, ps = read_micrograph(mics[0])
    v = view_image(img, ps, views.net, d["side"] * 2.0, views.view_pixel_A)
    ex = read_star_table(ds / "ex.star")[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
    return out, standardise(views.polarity * crops_at(v, ex, box))


def f1_kept(d: dict, keep: list[np.ndarray], qid: np.ndarray, sel: np.ndarray) -> float:
    """F1 over the queries keeping the gmm picks (``keep``, one mask per query) where ``sel`` (n,) is True."""
    tot = MatchCounts(0, 0, 0)
    for i, q in enumerate(d["queries"]):
        kk = keep[i].copy()
        kk[np.nonzero(keep[i])[0]] = sel[qid == i]
        tot = tot + count_matches(q["xy"][kk], q["truth"], d["side"], q["merit"][kk])
    return tot.f1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("../runs/choose_flatten"))
    ap.add_argument("--ks", type=int, nargs="+", default=[6, 10, 16])
    ap.add_argument("--refine", type=int, nargs="+", default=[0, 3])
    ap.add_argument("--per-micrograph", action="store_true", help="cluster each query's picks with the exemplars")
    a = ap.parse_args()
    configure_threads()
    cfg = PickConfig(diameter_A=100.0)
    results: dict[str, list[float]] = {}

    def add(name, f1):
        results.setdefault(name, []).append(f1)

    for ds, d in cached_sets(a.root):
        key = d["key"]
        _, _, _, views = _load_picker(str(ds / "cut_stage1" / "picker.pt"))
        qcrops, excrops = crops(ds, d, views)
        keep, kind, qid = [], [], []
        for i, q in enumerate(d["queries"]):
            q["merit"] = merit(q, cfg)
            g = q["merit"] >= auto_threshold(q["merit"], "gmm", fisher=False)
            t = match_picks(q["xy"], q["truth"], d["side"], q["merit"])
            o = match_picks(q["xy"], q["other"], d["side"], q["merit"])
            keep.append(g)
            kind.append(np.where(t, "T", np.where(o, "D", "B"))[g])
            qid.append(np.full(int(g.sum()), i))
        kind, qid = np.concatenate(kind), np.concatenate(qid)
        imgs = np.concatenate([c[g] for c, g in zip(qcrops, keep, strict=True)] + [excrops])
        n, m = len(kind), len(excrops)
        z = embed_images(views.net, imgs, progress=False)

        def f1_of(sel: np.ndarray, d=d, keep=keep, qid=qid) -> float:
            return f1_kept(d, keep, qid, sel)

        line = [f"{key}: {n} kept (T {np.sum(kind == 'T')}, D {np.sum(kind == 'D')}, B {np.sum(kind == 'B')})"]
        f = f1_of(np.ones(n, bool))
        add("gmm (shipped)", f)
        line.append(f"gmm {f:.3f}")
        groups = [np.nonzero(qid == i)[0] for i in range(len(keep))] if a.per_micrograph else [np.arange(n)]
        for k in a.ks:
            for r in a.refine:
                lq = np.zeros(n, int)
                le = []
                for gi, g in enumerate(groups):  # classes of each group get their own numbers
                    idx = np.concatenate([g, np.arange(n, n + m)])
                    lab0, _ = kmeans(reduce_dimensions(z[idx], min(50, len(idx) - 1), 0), k, seed=0)
                    if r:
                        mcfg = MRAConfig(iterations=r, work_box_px=32, fine_search=True, seed=0)
                        lab = mra_classify(imgs[idx], k, mcfg, progress=False, init_labels=lab0).labels
                    else:
                        lab = lab0
                    lq[g] = lab[: len(g)] + gi * k
                    le.append(lab[len(g) :] + gi * k)
                le = np.concatenate(le)
                k_all = k * len(groups)
                m_all = m * len(groups)
                ex_count = np.bincount(le, minlength=k_all)
                size = np.bincount(lq, minlength=k_all) + ex_count
                tag = f"k {k}, refine {r}"
                # oracle: classes whose picks are mostly targets
                tfrac = np.array([np.mean(kind[lq == c] == "T") if np.any(lq == c) else 0 for c in range(k_all)])
                rules = {
                    "oracle classes": tfrac[lq] > 0.5,
                    ">= 1 exemplar": ex_count[lq] >= 1,
                    ">= 2 exemplars": ex_count[lq] >= 2,
                    "exemplar share >= half the mean": (ex_count / np.maximum(size, 1))[lq]
                    >= 0.5 * m_all / (n + m_all),
                }
                for name, sel in rules.items():
                    f = f1_of(sel)
                    add(f"{tag}: {name}", f)
                    line.append(f"{name[:10]} {f:.3f}")
        print(" | ".join(line), flush=True)

    print(f"\n{'rule':55s} {'mean F1':>8s}   per dataset")
    for name, v in results.items():
        print(f"{name:55s} {np.mean(v):8.3f}   " + " ".join(f"{x:.3f}" for x in v), flush=True)


if __name__ == "__main__":
    main()
