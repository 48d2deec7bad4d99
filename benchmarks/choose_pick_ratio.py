"""Does a density ratio in the Siamese embedding rank target above distractor better? Training structures.

The view opinion of ``cryoshot pick`` scores a candidate by its similarity to the exemplars: an
estimate of how dense the target's images are around it, p_T(x). A distractor that looks a little
like the target gets a fair score, and there are many of it. Dividing by how dense *all* the
micrograph's candidates are around it, p(x) = pi p_T(x) + (1 - pi) p_other(x), gives a score
monotone in the posterior P(target | x) (positive-unlabelled learning by density ratio). Both
densities are kernel estimates on the unit sphere, kernel exp(cos / tau): log-mean over the
exemplars minus log-mean over the other candidates of the same micrograph.

On the cached candidates of ``choose_pick_cut.py`` (ten datasets of training maps, seed 9191),
each candidate is cut out at the network's grid and embedded; the ratio replaces the view
opinion in the figure of merit (or is added as a fourth), and every variant is cut by the gmm
threshold and by the best threshold per micrograph (oracle). F1 over the queries.

    cd benchmarks && ../.venv/bin/python choose_pick_ratio.py [--root DIR]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
from bench_picking import oracle_f1
from choose_pick_classes import crops
from choose_pick_cut import cached_sets
from scipy.special import logsumexp

from cryoshot.embedding.workflow import embed_images
from cryoshot.picking.matching import MatchCounts, count_matches
from cryoshot.picking.merit import fuse_scores
from cryoshot.picking.threshold import auto_threshold
from cryoshot.picking.views import VIEW_TOP
from cryoshot.picking.workflow import PickConfig, _load_picker
from cryoshot.utils.threads import configure_threads


def kde(z: np.ndarray, ref: np.ndarray, tau: float, exclude_self: bool = False) -> np.ndarray:
    """(N,) log of the mean kernel exp(cos / tau) between each row of ``z`` and the rows of ``ref``."""
    c = (z @ ref.T) / tau
    if exclude_self:
        np.fill_diagonal(c, -np.inf)
    n = ref.shape[0] - (1 if exclude_self else 0)
    return logsumexp(c, axis=1) - np.log(n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("../runs/choose_flatten"))
    a = ap.parse_args()
    configure_threads()
    cfg = PickConfig(diameter_A=100.0)
    data = []
    for ds, d in cached_sets(a.root):
        key = d["key"]
        cache = ds / "ratio_emb.pkl"
        if not cache.exists():
            _, _, _, views = _load_picker(str(ds / "cut_stage1" / "picker.pt"))
            qcrops, excrops = crops(ds, d, views)
            emb = {"q": [embed_images(views.net, c, progress=False) for c in qcrops],
                   "ex": embed_images(views.net, excrops, progress=False)}  # fmt: skip
            cache.write_bytes(pickle.dumps(emb))
        emb = pickle.loads(cache.read_bytes())
        for q, zq in zip(d["queries"], emb["q"], strict=True):
            q["z"] = zq.astype(np.float64)
        d["ex_z"] = emb["ex"].astype(np.float64)
        data.append(d)
        print(f"{key}: embedded", flush=True)

    def view_top(q, d):
        c = np.sort(q["z"] @ d["ex_z"].T, axis=1)[:, -VIEW_TOP:]
        return c.mean(1)

    def ratio(tau, alpha=1.0):  # alpha 0: the exemplars' density alone
        def score(q, d):
            own = kde(q["z"], q["z"], tau, exclude_self=True) if alpha else 0.0
            return kde(q["z"], d["ex_z"], tau) - alpha * own

        return score

    variants = {"views as shipped (top-3 mean)": (view_top, "view")}
    variants |= {f"exemplar KDE, tau {t:g}": (ratio(t, 0.0), "view") for t in (0.05, 0.1)}
    variants |= {f"ratio, tau {t:g}, alpha {al:g}": (ratio(t, al), "view") for t in (0.05, 0.1, 0.2)
                 for al in (0.5, 1.0)}  # fmt: skip
    variants |= {f"views + ratio tau {t:g} as a 4th opinion (0.25 each)": (ratio(t), "fourth") for t in (0.05, 0.1)}
    print(f"\n{'view opinion':52s} {'gmm':>6s} {'oracle':>7s}   per dataset (gmm)")
    for name, (fn, how) in variants.items():
        g_f1, o_f1 = [], []
        for d in data:
            gt, ot = MatchCounts(0, 0, 0), MatchCounts(0, 0, 0)
            for q in d["queries"]:
                s = fn(q, d)
                if how == "view":
                    m = fuse_scores(q["cos"], [(q["ncc"], cfg.template_weight), (s, cfg.view_weight)])
                else:
                    m = fuse_scores(q["cos"], [(q["ncc"], 0.35), (q["view"], 0.3), (s, 0.25)])
                keep = m >= auto_threshold(m, "gmm", fisher=False)
                gt = gt + count_matches(q["xy"][keep], q["truth"], d["side"], m[keep])
                keep = m >= oracle_f1(q["xy"], m, q["truth"], d["side"])[1]
                ot = ot + count_matches(q["xy"][keep], q["truth"], d["side"], m[keep])
            g_f1.append(gt.f1)
            o_f1.append(ot.f1)
        print(f"{name:52s} {np.mean(g_f1):6.3f} {np.mean(o_f1):7.3f}   " + " ".join(f"{x:.3f}" for x in g_f1),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
