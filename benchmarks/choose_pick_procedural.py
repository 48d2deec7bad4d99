"""Threshold rules for ``cryoshot pick`` on structures no network has seen: held-out procedural molecules.

The picking rules so far were chosen on datasets of the 8 training maps. Both networks behind
the figure of merit (the MAE and the Siamese view network) were trained on those maps, so there
the target is easier to tell from its distractors than on unseen proteins, and a rule that keeps
everything particle-like loses less. This dev set uses procedural pseudo-molecules from an index
range no training or validation ever drew (970000+): six targets, each with two distractors
(0.5-2x its size), and three targets alone (a clean sample), shaped like ``bench_picking.py``'s
datasets (2048² at 2 Å/px, an ice blob, a carbon edge, protein dark, SNR 0.02, 15 exemplars on
the first micrograph, the other four scored). Candidates are collected as ``choose_pick_cut.py`` does (``cryoshot pick`` as shipped),
then every rule cuts the same candidates; the training-map sets of ``choose_pick_cut.py`` are
scored beside them.

    cd benchmarks && ../.venv/bin/python choose_pick_procedural.py [--root DIR]
"""

from __future__ import annotations

import argparse
import pickle
from functools import partial
from pathlib import Path

import numpy as np
from bench_picking import make_dataset, oracle_f1, typed_diameter_A
from choose_pick_cut import cached_sets, collect, merit
from sklearn.mixture import GaussianMixture

from cryoshot.io.star import read_star_table, write_star
from cryoshot.picking.matching import MatchCounts, count_matches
from cryoshot.picking.threshold import auto_threshold, gmm_threshold
from cryoshot.picking.workflow import PickConfig
from cryoshot.utils.threads import configure_threads

SEED = 9797  # used nowhere else
# target: two distractors; procedural indices 970000+ are outside every range training or validation drew
SETS = {
    970002: (970000, 970013),
    970004: (970017, 970023),
    970019: (970014, 970029),
    970028: (970005, 970003),
    970020: (970015, 970022),
    970012: (970025, 970024),
}


# the target alone (no other protein: only ice, carbon and background), as in a clean purified sample
ALONE = (970036, 970045, 970032)  # 181, 156 and 120 Å


def dataset(root: Path, k: int, target: int, distractors: tuple[int, ...]) -> tuple[Path, str]:
    """The dataset folder (made when missing, with ex.star and truth_queries.star) and its key."""
    t = f"procedural:{target}"
    diameter = typed_diameter_A(t)
    sub = root if distractors else root / "alone"
    ds = make_dataset(sub, t, 0.02, 5, 2048, k, tuple(f"procedural:{d}" for d in distractors), diameter, SEED)
    if not (ds / "ex.star").exists():
        ex = read_star_table(ds / "exemplars25.star").iloc[:15]
        write_star(ds / "ex.star", ex[["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]])
        df = read_star_table(ds / "coordinates.star")
        write_star(ds / "truth_queries.star", df[df["rlnMicrographName"] != "mic_0000.mrc"])
    return ds, ds.name


def gmm_posterior(s: np.ndarray, p: float, n: int = 2) -> float:
    """Lowest score whose posterior of the top component of an ``n``-component mixture is at least ``p``."""
    return gmm_threshold(s, components=n, posterior=p)


def bic_mixture(s: np.ndarray, p: float = 0.5) -> float:
    """As :func:`gmm_posterior` with 2 or 3 components, whichever has the lower BIC."""
    x = np.asarray(s, float)[:, None]
    if len(x) < 6:
        return gmm_posterior(s, p, 2)
    n = min((2, 3), key=lambda n: GaussianMixture(n, random_state=0).fit(x).bic(x))
    return gmm_posterior(s, p, n)


def top_separation(s: np.ndarray) -> float:
    """Ashman's D between the top two components of a 3-component mixture on ``s`` (> 2: well apart)."""
    x = np.asarray(s, float)[:, None]
    if len(x) < 6:
        return 0.0
    gm = GaussianMixture(3, random_state=0).fit(x)
    o = np.argsort(gm.means_[:, 0])
    m, v = gm.means_[o, 0], gm.covariances_[o].reshape(-1)
    return float(np.sqrt(2) * (m[2] - m[1]) / np.sqrt(v[2] + v[1]))


def guarded(s: np.ndarray, d_min: float) -> float:
    """gmm3 when its top two components are at least ``d_min`` apart (Ashman's D), else gmm."""
    return gmm_posterior(s, 0.5, 3) if top_separation(s) >= d_min else gmm_posterior(s, 0.5, 2)


def fixed(s: np.ndarray, c: float) -> float:
    """A fixed cut ``c`` on the figure of merit (standardised over each micrograph's peaks)."""
    return c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("../runs/choose_pick_procedural"))
    ap.add_argument("--train-root", type=Path, default=Path("../runs/choose_flatten"))
    a = ap.parse_args()
    configure_threads()
    a.root.mkdir(parents=True, exist_ok=True)
    cfg = PickConfig(diameter_A=100.0)  # only its figure-of-merit weights are read (the defaults)
    groups: dict[str, list[dict]] = {"procedural (unseen)": [], "procedural alone": [], "training maps": []}
    (a.root / "alone").mkdir(exist_ok=True)
    for k, (target, distractors) in enumerate([*SETS.items(), *((t, ()) for t in ALONE)]):
        ds, key = dataset(a.root, k, target, distractors)
        cache = ds / "cut.pkl"
        if not cache.exists():
            cache.write_bytes(pickle.dumps(collect(ds, key)))
        groups["procedural (unseen)" if distractors else "procedural alone"].append(pickle.loads(cache.read_bytes()))
        print(f"{key}{'' if distractors else ' (alone)'}: collected", flush=True)
    groups["training maps"] = [d for _, d in cached_sets(a.train_root)]
    for data in groups.values():
        for d in data:
            for q in d["queries"]:
                q["merit"] = merit(q, cfg)

    rules = {"gmm (shipped)": lambda m: auto_threshold(m, "gmm", fisher=False)}
    rules |= {f"gmm posterior >= {p:g}": partial(gmm_posterior, p=p) for p in (0.7, 0.9, 0.97)}
    rules |= {f"3-component gmm, top, posterior >= {p:g}": partial(gmm_posterior, p=p, n=3)
              for p in (0.5, 0.9, 0.3, 0.7)}  # fmt: skip
    rules |= {f"2 or 3 components by BIC, top, posterior >= {p:g}": partial(bic_mixture, p=p) for p in (0.5, 0.9)}
    rules |= {f"gmm3 if its top two are D >= {c:g} apart, else gmm": partial(guarded, d_min=c)
              for c in (1.5, 2.0, 2.5, 3.0)}  # fmt: skip
    rules |= {f"z >= {c:g}": partial(fixed, c=c) for c in (0.25, 0.5, 0.75, 1.0)}
    for g, data in groups.items():
        dd = [top_separation(q["merit"]) for d in data for q in d["queries"]]
        print(f"Ashman's D of the top two of 3 components, {g}: quantiles 0.1/0.5/0.9 "
              f"{np.round(np.quantile(dd, [0.1, 0.5, 0.9]), 2)}")  # fmt: skip
    rules |= {"best threshold per micrograph (oracle)": None}
    print(f"\n{'rule':52s} " + " ".join(f"{g:>20s}" for g in groups) + "   per set (procedural | training)")
    for name, fn in rules.items():
        cols, per = [], []
        for data in groups.values():
            f1 = []
            for d in data:
                tot = MatchCounts(0, 0, 0)
                for q in d["queries"]:
                    m = q["merit"]
                    cut = oracle_f1(q["xy"], m, q["truth"], d["side"])[1] if fn is None else fn(m)
                    keep = m >= cut
                    tot = tot + count_matches(q["xy"][keep], q["truth"], d["side"], m[keep])
                f1.append(tot.f1)
            cols.append(f"{np.mean(f1):20.3f}")
            per.append(" ".join(f"{x:.3f}" for x in f1))
        print(f"{name:52s} " + " ".join(cols) + "   " + " | ".join(per), flush=True)


if __name__ == "__main__":
    main()
