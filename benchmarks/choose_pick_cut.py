"""Where should ``cryoshot pick`` cut its figure of merit? Decided on training structures.

The gmm threshold splits particles from background; when the micrograph also holds other
proteins it keeps them too (on the novel benchmark 550 picks for 180 target particles at
recall 0.96). The exemplars say what the target looks like to each opinion, in absolute
terms: the Siamese network's view score (a cosine) of an exemplar against the *other* 14
exemplars is a sample of the view scores true target particles get. This script collects, for
the ten datasets of training maps of ``choose_flatten.py`` (seed 9191, made there), the
candidates of ``cryoshot pick`` as shipped (stage 1 on the reference, then every opinion on the
4 query micrographs) and the exemplars' leave-one-out view scores on the reference, then compares
cuts: the gmm (shipped), and gmm with the view score held above a quantile of the exemplars'
leave-one-out view scores, and others. F1 over the queries against the target.

    cd benchmarks && ../.venv/bin/python choose_pick_cut.py [--root DIR]
"""

from __future__ import annotations

import argparse
import pickle
import shutil
from pathlib import Path

import numpy as np
from bench_picking import oracle_f1, typed_diameter_A
from choose_pick_rerank import MORE_SETS
from choose_pick_threshold import DEV_SETS

from cryoshot.io.star import read_star_table
from cryoshot.picking.matching import MatchCounts, count_matches, match_picks
from cryoshot.picking.merit import fuse_scores
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import candidate_picks
from cryoshot.picking.template import ncc_at, ncc_map
from cryoshot.picking.threshold import auto_threshold
from cryoshot.picking.views import VIEW_TOP, crops_at, embed_crops, view_image, view_scores
from cryoshot.picking.workflow import PickConfig, _load_picker, pick
from cryoshot.utils.threads import configure_threads


def opinions(net, ex_feats, template, views, cfg, img, ps) -> dict:
    """Candidates of one micrograph: input-pixel xy (N, 2), cosine, NCC and view score (N,) each."""
    b = bin_micrograph(img, ps, cfg.diameter_A, net.config.particle_px)
    xy, cos, _ = candidate_picks(net, b.image, ex_feats, cfg.stride_px, cfg.nms_distance, cfg.matching)
    xin = b.to_input(xy)
    v = view_image(img, ps, views.net, cfg.diameter_A, views.view_pixel_A)
    return {"xy": xin, "cos": cos, "ncc": ncc_at(ncc_map(b.image, template), xy), "view": view_scores(views, v, xin)}


def collect(ds: Path, key: str) -> dict:
    """Stage 1 as ``pick`` runs it, then the opinions on the queries and the exemplars' leave-one-out ones."""
    target = key.split("_")[0]
    diameter = typed_diameter_A(target)
    cfg = PickConfig(diameter_A=diameter)
    mics = sorted(ds.glob("mic_*.mrc"))
    out = ds / "cut_stage1"
    if not (out / "picker.pt").exists():
        shutil.rmtree(out, ignore_errors=True)
        pick([str(mics[0])], ds / "ex.star", out, cfg, progress=False, log=lambda s: None)
    net, ex_feats, template, views = _load_picker(str(out / "picker.pt"))
    truth = read_star_table(ds / "truth_queries.star")
    ex = read_star_table(ds / "ex.star")[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
    side = diameter / 2.0  # the pixel size is 2 Å: the diameter in input pixels is diameter / 2
    # the exemplars' view scores, each against the other 14 (as the reference micrograph's view image shows them)
    img, ps = read_micrograph(mics[0])
    v = view_image(img, ps, views.net, cfg.diameter_A, views.view_pixel_A)
    e = embed_crops(views.net, crops_at(v, ex, views.net.cfg.box_px), views.polarity).astype(np.float64)
    c = e @ e.T
    np.fill_diagonal(c, -np.inf)
    ex_view = np.sort(c, axis=1)[:, -VIEW_TOP:].mean(axis=1)
    d = {"key": key, "side": side, "ex_view": ex_view, "queries": []}
    for m in mics[1:]:
        img, ps = read_micrograph(m)
        q = opinions(net, ex_feats, template, views, cfg, img, ps)
        rows = truth[truth["rlnMicrographName"] == m.name]
        q["truth"] = rows.loc[rows["cryoshotStructureName"] == target, ["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(
            float
        )
        q["other"] = rows.loc[rows["cryoshotStructureName"] != target, ["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(
            float
        )
        d["queries"].append(q)
    return d


def cached_sets(root: Path):
    """(dataset folder, cached candidates) of each of ``choose_pick_cut.py``'s ten datasets found under ``root``."""
    for target in {**DEV_SETS, **MORE_SETS}:
        for snr in (0.02, 0.01):
            ds = root / f"{target}_snr{snr:g}_a0"
            if not (ds / "cut.pkl").exists():
                print(f"{ds}/cut.pkl missing (run choose_pick_cut.py first): skipped")
                continue
            yield ds, pickle.loads((ds / "cut.pkl").read_bytes())


def merit(q: dict, cfg: PickConfig) -> np.ndarray:
    return fuse_scores(q["cos"], [(q["ncc"], cfg.template_weight), (q["view"], cfg.view_weight)])


def evaluate(data: list[dict], rule) -> tuple[float, float, float, int]:
    """Mean F1 over datasets, mean precision and recall, and the picks, for ``rule(q, d) -> bool mask``."""
    f1s, ps, rs = [], [], []
    for d in data:
        tot = MatchCounts(0, 0, 0)
        for q in d["queries"]:
            keep = rule(q, d)
            m = q["merit"]
            tot = tot + count_matches(q["xy"][keep], q["truth"], d["side"], m[keep])
        f1s.append(tot.f1)
        ps.append(tot.precision)
        rs.append(tot.recall)
    return float(np.mean(f1s)), float(np.mean(ps)), float(np.mean(rs)), f1s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("../runs/choose_flatten"))
    a = ap.parse_args()
    configure_threads()
    cfg = PickConfig(diameter_A=100.0)  # only its figure-of-merit weights are read (the defaults)
    data = []
    for target in {**DEV_SETS, **MORE_SETS}:
        for snr in (0.02, 0.01):
            key = f"{target}_snr{snr:g}"
            ds = a.root / f"{key}_a0"
            cache = ds / "cut.pkl"
            if not cache.exists():
                if not (ds / "ex.star").exists():
                    print(f"{ds} is missing (run choose_flatten.py first): skipped")
                    continue
                cache.write_bytes(pickle.dumps(collect(ds, key)))
            d = pickle.loads(cache.read_bytes())
            for q in d["queries"]:
                q["merit"] = merit(q, cfg)
                # what each candidate is: target (IoU >= 0.5), another protein, or neither
                t = match_picks(q["xy"], q["truth"], d["side"], q["merit"])
                o = match_picks(q["xy"], q["other"], d["side"], q["merit"])
                q["kind"] = np.where(t, "T", np.where(o, "D", "B"))
            data.append(d)
            print(f"{key}: {sum(len(q['xy']) for q in d['queries'])} query candidates; exemplar view scores "
                  f"{np.round(np.quantile(d['ex_view'], [0, 0.1, 0.5, 0.9]), 3)}", flush=True)  # fmt: skip

    def gmm(q, d):
        return q["merit"] >= auto_threshold(q["merit"], "gmm", fisher=False)

    def gmm_view_q(qq):
        def rule(q, d):
            return gmm(q, d) & (q["view"] >= np.quantile(d["ex_view"], qq))

        return rule

    def gmm_view_sd(c):
        def rule(q, d):
            u = d["ex_view"]
            return gmm(q, d) & (q["view"] >= u.mean() - c * u.std(ddof=1))

        return rule

    def view_then_gmm(qq):
        def rule(q, d):
            ok = q["view"] >= np.quantile(d["ex_view"], qq)
            keep = np.zeros(len(ok), bool)
            if ok.sum() >= 4:
                keep[ok] = q["merit"][ok] >= auto_threshold(q["merit"][ok], "gmm", fisher=False)
            return keep

        return rule

    def view_q(qq):
        return lambda q, d: q["view"] >= np.quantile(d["ex_view"], qq)

    def oracle(q, d):
        return q["merit"] >= oracle_f1(q["xy"], q["merit"], q["truth"], d["side"])[1]

    rules = {"gmm (shipped)": gmm}
    rules |= {f"gmm and view >= exemplars' q{qq:g}": gmm_view_q(qq) for qq in (0.0, 0.05, 0.1, 0.2, 0.3)}
    rules |= {f"gmm and view >= exemplars' mean - {c:g} sd": gmm_view_sd(c) for c in (1.5, 2, 2.5, 3)}
    rules |= {f"view >= exemplars' q{qq:g}, then gmm": view_then_gmm(qq) for qq in (0.0, 0.1)}
    rules |= {f"view >= exemplars' q{qq:g}": view_q(qq) for qq in (0.0, 0.05, 0.1, 0.2)}
    rules |= {"best threshold per micrograph (oracle)": oracle}
    print(f"\n{'rule':44s} {'mean F1':>8s} {'P':>6s} {'R':>6s}   per dataset")
    for name, fn in rules.items():
        f1, p, r, per = evaluate(data, fn)
        print(f"{name:44s} {f1:8.3f} {p:6.3f} {r:6.3f}   " + " ".join(f"{x:.3f}" for x in per), flush=True)
    # what the gmm keeps, and where the view scores of each kind lie
    kinds = {k: [] for k in "TDB"}
    kept = {k: 0 for k in "TDB"}
    for d in data:
        for q in d["queries"]:
            g = gmm(q, d)
            for k in "TDB":
                kinds[k].append(q["view"][q["kind"] == k])
                kept[k] += int((g & (q["kind"] == k)).sum())
    print("\nkept by gmm: " + ", ".join(f"{k} {v}" for k, v in kept.items()) + "  (T target, D distractor, B neither)")
    for k, v in kinds.items():
        v = np.concatenate(v)
        print(f"view scores of {k}: n {len(v)}, quantiles 0.1/0.5/0.9 {np.round(np.quantile(v, [0.1, 0.5, 0.9]), 3)}")


if __name__ == "__main__":
    main()
