"""Can a classifier trained on the reference micrograph re-rank the picker's candidates? Decided on training structures.

Same datasets as ``choose_pick_threshold.py`` (training maps, seed 9191; the benchmark's novel
structures play no part). For each: stage 1 on the reference, then the cosine candidates (peaks
after NMS) of the reference (exemplars scored leave-one-out) and of the 4 queries, with each
candidate's encoder feature and its template NCC. Scorers are then compared on the same
candidates: oracle F1 (the ranking) and F1 with automatic thresholds.

    cd benchmarks && ../.venv/bin/python choose_pick_rerank.py [--root DIR] [--more]

``--more`` adds two more targets of training maps (1qvr, 5mrc; other training maps as
distractors), to check the choice on more data.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
from bench_picking import make_dataset, typed_diameter_A  # noqa: E402
from choose_pick_threshold import DEV_SEED, DEV_SETS, reference_stage1

from cryoshot.io.star import read_star_table
from cryoshot.models.mae2d import load_mae
from cryoshot.picking.matching import MatchCounts, count_matches
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import background_mean, candidate_picks, encode_windows, windows_at
from cryoshot.picking.template import exemplar_template, ncc_at, ncc_map
from cryoshot.picking.threshold import auto_threshold
from cryoshot.pretrained import resolve_picker_model
from cryoshot.utils.threads import configure_threads

MORE_SETS = {"1qvr": ("4cr2", "1s3x"), "5mrc": ("3d2f", "3h84")}  # training maps only


def _feats(net, image, xy):
    return encode_windows(net, windows_at(image, xy, net.config.window_px), center=background_mean(net, image)).numpy()


def collect(base, ds: Path, target: str, diameter: float, n_ex: int = 15) -> dict:
    net, cfg, mics, ref, exb, ex_f = reference_stage1(base, ds, diameter, n_ex)
    d = net.config.particle_px
    # augmented exemplar windows: 4 right-angle rotations x 9 one-pixel shifts
    w = windows_at(ref.image, exb, net.config.window_px)
    shifts = [windows_at(ref.image, exb + np.array([dx, dy]), net.config.window_px)
              for dx in (-1, 0, 1) for dy in (-1, 0, 1)]  # fmt: skip
    aug = np.concatenate([np.rot90(s, k, axes=(2, 3)) for s in shifts for k in range(4)])
    aug_f = encode_windows(net, np.ascontiguousarray(aug), center=background_mean(net, ref.image)).numpy()
    tmpl = exemplar_template(w)
    rxy, rs, _ = candidate_picks(net, ref.image, ex_f, cfg.stride_px, cfg.nms_distance, exclude=(exb, 0.5 * d))
    is_ex = np.linalg.norm(rxy[:, None] - exb[None], axis=2).min(axis=1) <= 0.25 * d
    out = {"ex_f": ex_f.numpy(), "aug_f": aug_f, "side": diameter / 2.0,
           "ref": {"s": rs, "is_ex": is_ex, "f": _feats(net, ref.image, rxy),
                   "ncc": ncc_at(ncc_map(ref.image, tmpl), rxy)}, "queries": []}  # fmt: skip
    truth_df = read_star_table(ds / "coordinates.star")
    for m in mics[1:]:
        img, ps = read_micrograph(m)
        b = bin_micrograph(img, ps, diameter, d)
        xy, s, _ = candidate_picks(net, b.image, ex_f, cfg.stride_px, cfg.nms_distance)
        rows = truth_df[(truth_df["rlnMicrographName"] == m.name) & (truth_df["cryoshotStructureName"] == target)]
        out["queries"].append({"xy": b.to_input(xy), "s": s, "f": _feats(net, b.image, xy),
                               "ncc": ncc_at(ncc_map(b.image, tmpl), xy),
                               "truth": rows[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)})  # fmt: skip
    return out


def f1_of(d: dict, scores: list[np.ndarray], thr_fn) -> tuple[float, float]:
    """(auto F1, oracle F1) over the queries for per-query ``scores`` and a threshold function."""
    auto, orac = MatchCounts(0, 0, 0), MatchCounts(0, 0, 0)
    for q, s in zip(d["queries"], scores, strict=True):
        order = np.argsort(-s, kind="stable")
        xy, s = q["xy"][order], s[order]
        thr = thr_fn(s)
        auto = auto + count_matches(xy[s >= thr], q["truth"], d["side"], s[s >= thr])
        best = MatchCounts(0, 0, len(q["truth"]))
        for t in np.unique(s)[::-1][:400]:
            c = count_matches(xy[s >= t], q["truth"], d["side"], s[s >= t])
            best = c if c.f1 > best.f1 else best
        orac = orac + best
    return auto.f1, orac.f1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--root", type=Path, default=Path("../runs/choose_pick_threshold"))
    ap.add_argument("--more", action="store_true", help="two more targets (MORE_SETS)")
    a = ap.parse_args()
    sets = {**DEV_SETS, **(MORE_SETS if a.more else {})}
    configure_threads()
    base, _ = load_mae(resolve_picker_model(a.model))
    data = {}
    for k, (target, snr) in enumerate((t, s) for t in sets for s in (0.02, 0.01)):
        diameter = typed_diameter_A(target)
        cache = a.root / f"{target}_snr{snr:g}_rerank.pkl"
        if not cache.exists():
            ds = make_dataset(a.root, target, snr, 5, 2048, k, sets[target], diameter, DEV_SEED)
            cache.write_bytes(pickle.dumps(collect(base, ds, target, diameter)))
        data[f"{target} {snr:g}"] = pickle.loads(cache.read_bytes())
        print(f"{target} SNR {snr:g} ready", flush=True)
    scorers = scorer_table()
    print(f"{'scorer':44s} " + " ".join(f"{n:>12s}" for n in data) + "   mean (auto gmm / oracle)")
    for name, fn in scorers.items():
        res = []
        for d in data.values():
            ss = fn(d)
            res.append(f1_of(d, ss, lambda s: auto_threshold(s, "gmm") if len(s) else np.inf))
        res = np.array(res)
        print(f"{name:44s} " + " ".join(f"{x:.3f}/{y:.3f}" for x, y in res) +
              f"   {res[:, 0].mean():.3f} / {res[:, 1].mean():.3f}", flush=True)  # fmt: skip


def scorer_table() -> dict:
    from sklearn.linear_model import LogisticRegression

    def cos(d):
        return [q["s"] for q in d["queries"]]

    def logreg(c: float, aug: bool, with_ncc: bool = False):
        def fn(d):
            r = d["ref"]
            pos = d["aug_f"] if aug else r["f"][r["is_ex"]]
            neg = r["f"][~r["is_ex"]]
            x = np.concatenate([pos, neg])
            y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
            if with_ncc:
                zn = (r["ncc"] - r["ncc"].mean()) / r["ncc"].std()
                x = np.c_[x, np.r_[np.full(len(pos), zn[r["is_ex"]].mean()), zn[~r["is_ex"]]]]
            clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(x, y)
            out = []
            for q in d["queries"]:
                xq = q["f"]
                if with_ncc:
                    xq = np.c_[xq, (q["ncc"] - q["ncc"].mean()) / q["ncc"].std()]
                out.append(np.tanh(clf.decision_function(xq) / 4))
            return out

        return fn

    def cos_plus_ncc(wt: float):
        def fn(d):
            out = []
            for q in d["queries"]:
                z = np.arctanh(np.clip(q["s"], -0.999, 0.999))
                zc = (z - z.mean()) / z.std()
                zn = (q["ncc"] - q["ncc"].mean()) / q["ncc"].std()
                out.append(np.tanh(((1 - wt) * zc + wt * zn) / 4))
            return out

        return fn

    t = {"cosine (shipped)": cos}
    for c in (0.01, 0.1, 1.0):
        t[f"logreg C={c}"] = logreg(c, False)
        t[f"logreg C={c}, augmented positives"] = logreg(c, True)
    t["logreg C=0.1, aug, + NCC"] = logreg(0.1, True, True)
    for wt in (0.3, 0.43, 0.5, 0.6, 0.7, 0.8, 1.0):
        t[f"cosine + NCC ({wt})"] = cos_plus_ncc(wt)
    return t


if __name__ == "__main__":
    main()
