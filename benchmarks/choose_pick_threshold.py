"""Which automatic picking threshold to ship, decided on structures the picker trained on (never the novel ones).

Datasets shaped like ``bench_picking.py``'s (one target and two distractors, 2048² at 2 Å/px,
ice blob, carbon edge, protein dark, SNR 0.02 and 0.01, 15 exemplars on the first micrograph,
the others scored), but made of the 8 bundled training maps with another seed, so the
benchmark's novel structures play no part in the choice. Candidates are computed once and
cached; every rule is then scored on the same candidates.

    .venv/bin/python benchmarks/choose_pick_threshold.py [--model PATH] [--root DIR] [--stride 4]
"""

from __future__ import annotations

import argparse
import copy
import pickle
from pathlib import Path

import numpy as np
from bench_picking import make_dataset, typed_diameter_A  # noqa: E402  (benchmarks/ on sys.path when run as a script)
from scipy.stats import norm
from sklearn.mixture import GaussianMixture

from cryoshot.io.star import read_star_table
from cryoshot.models.mae2d import load_mae
from cryoshot.picking.matching import MatchCounts, count_matches
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import candidate_picks
from cryoshot.picking.stage1 import Stage1Config, fine_tune
from cryoshot.picking.threshold import THRESHOLD_RULES, auto_threshold
from cryoshot.picking.workflow import PickConfig, _features, estimate_pi
from cryoshot.pretrained import resolve_picker_model
from cryoshot.utils.threads import configure_threads

DEV_SEED = 9191  # neither the benchmark's nor training's
DEV_SETS = {"2cg9": ("3h84", "1qvr"), "3d2f": ("1s3x", "4cr2"), "4v7r": ("5mrc", "2cg9")}


def reference_stage1(base, ds: Path, diameter: float, n_ex: int = 15, stride: int = 4):
    """Stage 1, as ``pick`` runs it, on a dataset's first micrograph with its first ``n_ex`` exemplars.

    Returns the tuned network, the settings, the dataset's micrographs, the binned reference,
    the exemplars' binned coordinates (n_ex, 2) and their features.
    """
    net = copy.deepcopy(base)
    cfg = PickConfig(diameter_A=diameter, stride_px=stride, stage1=Stage1Config(steps=150))
    mics = sorted(ds.glob("mic_*.mrc"))
    ex = read_star_table(ds / "exemplars25.star").iloc[:n_ex]
    img, ps = read_micrograph(mics[0])
    ref = bin_micrograph(img, ps, diameter, net.config.particle_px)
    exb = ref.to_binned(ex[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy())
    ex_xy = [(0, float(x), float(y)) for x, y in exb]
    pi = estimate_pi(net, [ref], _features(net, [ref], ex_xy, net.config.window_px), cfg)
    fine_tune(net, [ref.image], ex_xy, cfg.stage1, pi, cfg.seed, progress=False)
    return net, cfg, mics, ref, exb, _features(net, [ref], ex_xy, net.config.window_px)


def candidates(base, ds: Path, target: str, diameter: float, n_ex: int = 15, stride: int = 4) -> dict:
    """Stage 1 on the reference; leave-one-out candidates there; candidates and truth on the queries."""
    net, cfg, mics, ref, exb, feats = reference_stage1(base, ds, diameter, n_ex, stride)
    d = net.config.particle_px
    rxy, rs, _ = candidate_picks(net, ref.image, feats, cfg.stride_px, cfg.nms_distance, exclude=(exb, 0.5 * d))
    dist = np.linalg.norm(rxy[:, None] - exb[None], axis=2)
    is_ex = dist.min(axis=1) <= 0.25 * d
    truth_df = read_star_table(ds / "coordinates.star")
    queries = []
    for m in mics[1:]:
        img, ps = read_micrograph(m)
        b = bin_micrograph(img, ps, diameter, d)
        xy, s, _ = candidate_picks(net, b.image, feats, cfg.stride_px, cfg.nms_distance)
        rows = truth_df[(truth_df["rlnMicrographName"] == m.name) & (truth_df["cryoshotStructureName"] == target)]
        queries.append((b.to_input(xy), s, rows[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)))
    return {"ref_s": rs, "ref_is_ex": is_ex, "queries": queries, "side": diameter / 2.0}


# ---- candidate rules: f(query scores, dataset) -> cosine threshold ------------------------------
# The exemplar-calibrated ones use the exemplars' leave-one-out scores on the reference micrograph
# (``ref_s[ref_is_ex]``): a sample of the scores true particles get, as stage 2 scores them.
def _z(s: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(np.asarray(s, float), -0.999999, 0.999999))


def exemplar_quantile(q: float):
    """The q-quantile of the exemplars' leave-one-out scores (expected recall about 1 - q)."""
    return lambda s, d: float(np.quantile(d["ref_s"][d["ref_is_ex"]], q))


def exemplar_expected_f1(min_recall: float = 0.5):
    """Maximise an estimated F1: recall R(t) from a normal fit to the exemplars' z-scores; the
    number of particles P from the top of the list, min N(t)/R(t) where R(t) >= min_recall;
    F1(t) = 2 P R(t) / (N(t) + P)."""

    def rule(s: np.ndarray, d: dict) -> float:
        u = _z(d["ref_s"][d["ref_is_ex"]])
        zs = np.sort(_z(s))[::-1]
        n = np.arange(1, len(zs) + 1)
        r = norm.sf((zs - u.mean()) / u.std(ddof=1))
        ok = r >= min_recall
        if not ok.any():
            return float(np.tanh(u.mean()))
        p = np.min(n[ok] / r[ok])
        return float(np.tanh(zs[int(np.argmax(2 * p * r / (n + p)))]))

    return rule


def gmm_f1_optimal(s: np.ndarray, d: dict) -> float:
    """The two-component mixture's posteriors, cut where the expected F1 is highest (not at 0.5)."""
    zs = _z(s)[:, None]
    gm = GaussianMixture(2, random_state=0).fit(zs)
    p = gm.predict_proba(zs)[:, int(np.argmax(gm.means_[:, 0]))]
    o = np.argsort(-zs[:, 0])
    f1 = 2 * np.cumsum(p[o]) / (np.arange(1, len(o) + 1) + p.sum())
    return float(np.tanh(zs[o[int(np.argmax(f1))], 0]))


def gmm_clamped(lo: float, hi: float):
    """The mixture rule's cut, kept between two quantiles of the exemplars' leave-one-out scores."""

    def rule(s: np.ndarray, d: dict) -> float:
        e = d["ref_s"][d["ref_is_ex"]]
        return float(np.clip(auto_threshold(s, "gmm"), np.quantile(e, lo), np.quantile(e, hi)))

    return rule


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--root", type=Path, default=Path("runs/choose_pick_threshold"))
    ap.add_argument("--stride", type=int, default=4, help="scan stride (binned px) of the candidates")
    a = ap.parse_args()
    configure_threads()
    a.root.mkdir(parents=True, exist_ok=True)
    base, _ = load_mae(resolve_picker_model(a.model))
    data = {}
    for k, (target, snr) in enumerate((t, s) for t in DEV_SETS for s in (0.02, 0.01)):
        diameter = typed_diameter_A(target)
        cache = a.root / (f"{target}_snr{snr:g}.pkl" if a.stride == 4 else f"{target}_snr{snr:g}_stride{a.stride}.pkl")
        if not cache.exists():
            ds = make_dataset(a.root, target, snr, 5, 2048, k, DEV_SETS[target], diameter, DEV_SEED)
            cache.write_bytes(pickle.dumps(candidates(base, ds, target, diameter, stride=a.stride)))
        data[f"{target} SNR {snr:g}"] = pickle.loads(cache.read_bytes())
        print(f"{target} SNR {snr:g}: {len(data[f'{target} SNR {snr:g}']['ref_s'])} reference candidates", flush=True)
    rules = {r: (lambda s, d, r=r: auto_threshold(s, r)) for r in THRESHOLD_RULES}
    rules |= {f"exemplar quantile {q}": exemplar_quantile(q) for q in (0.1, 0.2, 0.3)}
    rules |= {f"exemplar expected F1 (R>={r})": exemplar_expected_f1(r) for r in (0.3, 0.5)}
    rules |= {"gmm, F1-optimal cut": gmm_f1_optimal, "gmm within exemplar q0-q0.2": gmm_clamped(0.0, 0.2)}
    table = {}
    for d in data.values():
        for rule, fn in rules.items():
            c = MatchCounts(0, 0, 0)
            for xy, s, t in d["queries"]:
                thr = fn(s, d) if len(s) else np.inf
                c = c + count_matches(xy[s >= thr], t, d["side"], s[s >= thr])
            table.setdefault(rule, []).append(c.f1)
    for d in data.values():  # the best threshold per micrograph, from the truth: the ceiling
        c = MatchCounts(0, 0, 0)
        for xy, s, t in d["queries"]:
            best = MatchCounts(0, 0, len(t))
            for thr in np.unique(s)[::-1][:400]:
                cc = count_matches(xy[s >= thr], t, d["side"], s[s >= thr])
                best = cc if cc.f1 > best.f1 else best
            c = c + best
        table.setdefault("best threshold (oracle)", []).append(c.f1)
    print(f"{'rule':34s} " + " ".join(f"{n:>14s}" for n in data) + "    mean")
    for rule, f1s in table.items():
        print(f"{rule:34s} " + " ".join(f"{v:14.3f}" for v in f1s) + f"   {np.mean(f1s):.3f}")


if __name__ == "__main__":
    main()
