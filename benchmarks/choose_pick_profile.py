"""A size-sensitive opinion for ``cryoshot pick``: does a candidate's radial profile tell the target from
other proteins better than the opinions already in the figure of merit?

The figure of merit keeps many distractors whose size differs from the target's (on the
benchmark, 3gl1 at 108 Å beside 1bxn at 157 Å is kept half the time). The template's NCC sums
over a square window, so the background in its corners weighs as much as the particle. This
script reads each candidate's rotationally averaged radial profile on the picker's scale and
compares it with the exemplars' mean profile (Pearson correlation over radius), then measures,
on the dev sets only (held-out procedural molecules with distractors, and training-map sets),
how each opinion ranks target against distractor (AUC) and the F1 of the shipped cut when the
profile joins the figure of merit.

    cd benchmarks && ../.venv/bin/python choose_pick_profile.py [--runs ../runs]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
from bench_picking import typed_diameter_A
from choose_pick_shift import dev_sets
from sklearn.metrics import roc_auc_score

from cryoshot.io.star import read_star_table
from cryoshot.picking.matching import MatchCounts, count_matches, match_picks
from cryoshot.picking.merit import standardise_scores
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import windows_at
from cryoshot.picking.threshold import auto_threshold
from cryoshot.picking.workflow import PickConfig, _load_picker, _view_of, score_candidates
from cryoshot.utils.threads import configure_threads

R_MAX = 14  # binned px (the particle spans 16)
W = 2 * R_MAX + 1
CACHE = "stage2_candidates.pkl"  # each dev set's candidates, merit, profile and labels (choose_pick_pooled_cut.py reads it too)


def stage1_model(ds: Path) -> Path:
    """The dev set's stage-1 ``picker.pt``: the shipped stage 1 as choose_pick_stage1.py ran it, where it
    did, else the one choose_pick_cut.py / choose_pick_procedural.py ran (``cut_stage1``)."""
    p = ds / "stage1_variants" / "PU-adjusted_SCS_beta_1" / "picker.pt"
    return p if p.exists() else ds / "cut_stage1" / "picker.pt"


def ring_index(w: int = W) -> np.ndarray:
    y, x = np.mgrid[:w, :w] - (w - 1) / 2
    return np.rint(np.hypot(x, y)).astype(int)


def radial_profiles(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N, R_MAX + 1) mean value on each integer-radius ring around binned ``xy`` (N, 2)."""
    win = windows_at(image, xy, W)[:, 0].reshape(len(xy), -1)
    r = ring_index().ravel()
    keep = r <= R_MAX
    onehot = np.zeros((keep.sum(), R_MAX + 1))
    onehot[np.arange(keep.sum()), r[keep]] = 1
    return win[:, keep] @ onehot / onehot.sum(0)


def pearson(p: np.ndarray, ref: np.ndarray) -> np.ndarray:
    a = p - p.mean(1, keepdims=True)
    b = ref - ref.mean()
    return a @ b / (np.linalg.norm(a, axis=1) * np.linalg.norm(b) + 1e-9)


def collect(ds: Path) -> dict:
    """Per query: candidates (input px), merit, profile correlation, label (structure name or '')."""
    key = ds.name
    target = key.split("_")[0]
    cfg = PickConfig(diameter_A=typed_diameter_A(target))
    net, ex_feats, template, views = _load_picker(str(stage1_model(ds)))
    mics = sorted(ds.glob("mic_*.mrc"))
    img, ps = read_micrograph(mics[0])
    b = bin_micrograph(img, ps, cfg.diameter_A, net.config.particle_px)
    ex = read_star_table(ds / "ex.star")[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
    ref_profile = radial_profiles(b.image, b.to_binned(ex)).mean(0)
    truth = read_star_table(ds / "truth_queries.star")
    out = {"target": target, "side": cfg.diameter_A, "queries": []}
    for m in mics[1:]:
        img, ps = read_micrograph(m)
        b = bin_micrograph(img, ps, cfg.diameter_A, net.config.particle_px)
        v = _view_of(img, ps, views, cfg)
        xy, merit, _, _ = score_candidates(net, b, ex_feats, cfg, template, views, v)
        prof = pearson(radial_profiles(b.image, xy), ref_profile)
        xin = b.to_input(xy)
        t = truth[truth["rlnMicrographName"] == m.name]
        lab = np.array([""] * len(xy), object)
        for st in t["cryoshotStructureName"].unique():
            txy = t.loc[t["cryoshotStructureName"] == st, ["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
            hit = match_picks(xin, txy, cfg.diameter_A / ps, merit)
            lab[(lab == "") & hit] = st
        ttxy = t.loc[t["cryoshotStructureName"] == target, ["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
        out["queries"].append({"xy": xin, "merit": merit, "profile": prof, "label": lab, "truth": ttxy, "ps": ps})
    return out


def cached_candidates(ds: Path) -> dict:
    """:func:`collect`'s result for ``ds``, computed once and kept in ``ds / CACHE``."""
    cache = ds / CACHE
    if not cache.exists():
        cache.write_bytes(pickle.dumps(collect(ds)))
    return pickle.loads(cache.read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="../runs")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    a = ap.parse_args()
    configure_threads()
    sets = [(g, ds) for g, ds in dev_sets(Path(a.runs)) if g != "alone"]
    sets = [(g, ds) for g, ds in sets if g != "training maps" or "_snr0.02" in ds.name]
    f1 = {w: [] for w in a.weights}
    for group, ds in sets:
        d = cached_candidates(ds)
        tgt = d["target"]
        aucs = {"merit": [], "profile": []}
        for q in d["queries"]:
            part = q["label"] != ""
            y = q["label"][part] == tgt
            if y.all() or not y.any():
                continue
            for k in aucs:
                aucs[k].append(roc_auc_score(y, q[k][part]))
        line = []
        for w in a.weights:
            tot = MatchCounts(0, 0, 0)
            for q in d["queries"]:
                s = (1 - w) * q["merit"] + w * standardise_scores(q["profile"])
                order = np.argsort(-s, kind="stable")
                s, xy = s[order], q["xy"][order]
                keep = s >= auto_threshold(s, "gmm3", fisher=False)
                tot = tot + count_matches(xy[keep], q["truth"], d["side"] / q["ps"], s[keep])
            f1[w].append(tot.f1)
            line.append(f"{tot.f1:.3f}")
        auc = "  ".join(f"AUC {k} {np.mean(v):.3f}" if v else f"AUC {k} -" for k, v in aucs.items())
        print(f"{group:12s} {ds.name:28s} {auc}   F1 " + " ".join(line), flush=True)
    print(f"\nmean F1 over {len(sets)} dev sets, profile weight " + " / ".join(f"{w:g}" for w in a.weights) + ": "
          + " / ".join(f"{np.mean(f1[w]):.3f}" for w in a.weights))  # fmt: skip


if __name__ == "__main__":
    main()
