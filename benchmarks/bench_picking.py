"""Few-shot particle picking on micrographs of structures no model was trained on (cryoMAE).

Datasets: micrographs simulated from the novel bundled structures, one target per
dataset and two other novel structures as distractors (equal abundance), with an ice
blob and a carbon edge, protein dark as in raw data, at two SNR levels. 15 exemplars
of the target on the first micrograph (the reference); the other micrographs are the
queries that are scored. A pick is right when its diameter-sized box has IoU >= 0.5
with a target particle not already matched (paper §4.1.3); picks on distractors are
false positives.

Rows: cryoshot (stage 1 + stage 2) with each automatic threshold, and with the best
threshold chosen from the truth (an upper bound); a classical baseline (normalised
cross-correlation with the rotationally averaged exemplar mean) with the tail rule and
with its best threshold; ablations (no self-cross similarity loss, no PU adjustment,
no pre-training, mean matching, no template or no view opinion in the figure of merit,
1/5/25 exemplars, strides) with seconds per micrograph.

    .venv/bin/python benchmarks/bench_picking.py [--model PATH] [--quick] [--ablations] [--replicate N]
    .venv/bin/python benchmarks/bench_picking.py --speed   # seconds for a 4096^2 micrograph at 1 Å/px
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from cryoshot.data.micrograph_episodes import structure_diameter_A
from cryoshot.io.star import read_star_table, write_star
from cryoshot.models.mae2d import PickerMAE, load_mae
from cryoshot.picking.matching import MatchCounts, count_matches
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import candidate_picks, peaks, windows_at
from cryoshot.picking.stage1 import LossConfig, Stage1Config, fine_tune
from cryoshot.picking.template import exemplar_template, ncc_map
from cryoshot.picking.threshold import THRESHOLD_RULES, rule_thresholds
from cryoshot.picking.views import view_image, view_pixel_size, view_reference
from cryoshot.picking.workflow import DEFAULT_RULE, PickConfig, _features, _view_net, estimate_pi, rank_by_merit
from cryoshot.pretrained import resolve_picker_model
from cryoshot.simulate.micrographs import MicrographConfig
from cryoshot.simulate.workflow import simulate_micrographs
from cryoshot.utils.threads import configure_threads

BENCH_SEED = 4242  # never used in training
DATASETS = {  # target: distractors (all novel)
    "1bxn": ("3gl1", "3qm1"),
    "3cf3": ("1u6g", "3gl1"),
    "4v4r": ("6qzp", "3ipm"),
}
DIAMETER_A = {"1bxn": 160.0, "3cf3": 170.0, "4v4r": 310.0}
SNRS = (0.02, 0.01)


def typed_diameter_A(structure: str) -> int:
    """A dev set's ``--diameter``: the structure's diameter (Å) rounded to 10 Å, as a user would type it
    (an int, as the dev scripts have always passed it, so their cache keys and logs are unchanged)."""
    return round(structure_diameter_A(structure) / 10) * 10


def make_dataset(root: Path, target: str, snr: float, n_mic: int, size: int, k: int,
                 distractors: tuple[str, ...] | None = None, diameter_A: float | None = None,
                 seed: int = BENCH_SEED) -> Path:  # fmt: skip
    """A dataset folder (micrographs, coordinates.star, exemplars25.star); reused when it exists."""
    out = root / f"{target}_snr{snr:g}"
    if (out / "coordinates.star").exists():
        return out
    distractors = DATASETS[target] if distractors is None else distractors
    box = 192 if (diameter_A or DIAMETER_A[target]) > 200 else 128
    cfg = MicrographConfig(size_px=size, pixel_size_A=2.0, particle_box_px=box, n_particles=150, snr=snr,
                           n_ice_blobs=1, carbon_edge=True, invert=True, seed=seed + k)  # fmt: skip
    simulate_micrographs([target, *distractors], out, cfg, n_mic, progress=False)
    df = read_star_table(out / "coordinates.star")
    ref = df[(df["rlnMicrographName"] == "mic_0000.mrc") & (df["cryoshotStructureName"] == target)]
    ex = ref.sample(min(25, len(ref)), random_state=seed)
    write_star(out / "exemplars25.star", ex[["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]])
    return out


def oracle_f1(xy, s, truth, side) -> tuple[MatchCounts, float]:
    """Best F1 over all thresholds (chosen from the truth: an upper bound)."""
    best, best_t = MatchCounts(0, 0, len(truth)), np.inf
    for t in np.unique(s)[::-1][:400]:
        c = count_matches(xy[s >= t], truth, side, s[s >= t])
        if c.f1 > best.f1:
            best, best_t = c, t
    return best, float(best_t)


def baseline_inputs(ds: Path, diameter_A: float, particle_px: int, n_ex: int = 15, exemplars: str = "exemplars25.star"):
    """The reference and the queries binned for ``diameter_A`` itself, with the first ``n_ex`` exemplars of
    ``ds / exemplars`` on that scale: the baseline's inputs however cryoshot bins (``PickConfig.diameter_scale``)."""
    mics = sorted(ds.glob("mic_*.mrc"))
    binned = [bin_micrograph(*read_micrograph(m), diameter_A, particle_px) for m in mics]
    ex = read_star_table(ds / exemplars).iloc[:n_ex][["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
    return binned[0], [(0, float(x), float(y)) for x, y in binned[0].to_binned(ex)], binned[1:]


def template_baseline(refs, ex_xy, queries, particle_px: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exemplar average, rotationally averaged (in-plane angles unknown), matched by NCC."""
    w = 24
    rot = exemplar_template(np.concatenate([windows_at(refs[i].image, np.array([[x, y]]), w) for i, x, y in ex_xy]))
    out = []
    for b in queries:
        m = ncc_map(b.image, rot)
        xs, ys = np.arange(m.shape[1], dtype=float), np.arange(m.shape[0], dtype=float)
        xy, s = peaks(m[::2, ::2], xs[::2], ys[::2], 0.7 * particle_px)
        out.append((b.to_input(xy), s))
    return out


def evaluate_rows(cands, truths, side_px, fisher: bool = True) -> dict[str, MatchCounts]:
    """Counts over the queries for each threshold rule and for the oracle (``fisher``: cosine scores); a pooled
    rule cuts all the queries at one threshold, fitted to their candidates together, as ``cryoshot pick`` does."""
    rows = {}
    for rule in THRESHOLD_RULES:
        c = MatchCounts(0, 0, 0)
        thresholds = rule_thresholds([s for _, s in cands], rule, fisher)
        for (xy, s), t, thr in zip(cands, truths, thresholds, strict=True):
            c = c + count_matches(xy[s >= thr], t, side_px, s[s >= thr])
        rows[rule] = c
    c = MatchCounts(0, 0, 0)
    for (xy, s), t in zip(cands, truths, strict=True):
        c = c + oracle_f1(xy, s, t, side_px)[0]
    rows["best (oracle)"] = c
    return rows


def run_cryoshot(base: PickerMAE, ds: Path, target: str, cfg: PickConfig, n_ex: int, pretrained: bool = True):
    """Stage 1 on the reference, stage 2 on the queries; returns candidates per query, times.

    Candidates carry the figure of merit of ``cfg`` (``picking.workflow.rank_by_merit``: the cosine
    fused with the template's NCC and the Siamese view similarity); ``info["cosine_cands"]`` the
    same peaks ranked by cosine alone.
    """
    net = copy.deepcopy(base) if pretrained else PickerMAE(base.config)
    mics = sorted(ds.glob("mic_*.mrc"))
    ex = read_star_table(ds / "exemplars25.star").iloc[:n_ex]
    img, ps = read_micrograph(mics[0])
    ref = bin_micrograph(img, ps, cfg.work_diameter_A, net.config.particle_px)
    ex_xy = [(0, float(x), float(y)) for x, y in ref.to_binned(ex[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy())]
    t0 = time.perf_counter()
    base_feats = _features(net, [ref], ex_xy, net.config.window_px)
    loss = cfg.stage1.loss or LossConfig()
    pi = loss.pi if loss.pi is not None else estimate_pi(net, [ref], base_feats, cfg)
    if cfg.stage1.steps:
        fine_tune(net, [ref.image], ex_xy, cfg.stage1, pi, cfg.seed, progress=False)
    t1 = time.perf_counter() - t0
    feats = _features(net, [ref], ex_xy, net.config.window_px)
    template = exemplar_template(windows_at(ref.image, np.array([(x, y) for _, x, y in ex_xy]), net.config.window_px))
    vnet = _view_net() if cfg.view_weight > 0 else None
    views = None
    if vnet is not None:  # as pick's: the view pixel size follows the typed diameter
        view_px = view_pixel_size(vnet, cfg.diameter_A)
        ex_xy_in = ex[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
        views = view_reference(vnet, [(view_image(img, ps, vnet, cfg.work_diameter_A, view_px), ex_xy_in)],
                               cfg.work_diameter_A, view_px)  # fmt: skip
    cands, cos_cands, truths, secs, queries = [], [], [], [], []
    truth_df = read_star_table(ds / "coordinates.star")
    for m in mics[1:]:
        t = time.perf_counter()
        img, ps = read_micrograph(m)
        b = bin_micrograph(img, ps, cfg.work_diameter_A, net.config.particle_px)
        xy, s, _ = candidate_picks(net, b.image, feats, cfg.stride_px, cfg.nms_distance, cfg.matching)
        cos_cands.append((b.to_input(xy), s))
        v = view_image(img, ps, vnet, cfg.work_diameter_A, views.view_pixel_A) if views is not None else None
        nms_px = cfg.nms_distance * net.config.particle_px
        xy, s, _ = rank_by_merit(b, xy, s, cfg, template, views, v, nms_px=nms_px)  # as pick_one ranks them
        secs.append(time.perf_counter() - t)
        cands.append((b.to_input(xy), s))
        rows = truth_df[(truth_df["rlnMicrographName"] == m.name) & (truth_df["cryoshotStructureName"] == target)]
        truths.append(rows[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float))
        queries.append(b)
    info = {"stage1_s": t1, "s_per_mic": float(np.mean(secs)), "pi": pi, "cosine_cands": cos_cands}
    return cands, truths, info, (ref, ex_xy, queries)


def fmt(c: MatchCounts) -> str:
    return f"{c.precision:.3f} {c.recall:.3f} {c.f1:.3f}"


def speed(root: Path, model: str) -> None:
    """End-to-end seconds (MRC file -> picks) for a 4096^2 micrograph at 1 Å/px with a 160 Å particle."""
    ds = root / "speed_4096"
    if not (ds / "coordinates.star").exists():
        cfg = MicrographConfig(size_px=4096, pixel_size_A=1.0, particle_box_px=192, n_particles=400, snr=0.01,
                               invert=True, seed=BENCH_SEED)  # fmt: skip
        simulate_micrographs(["1bxn", "3gl1"], ds, cfg, 2, progress=False)
        df = read_star_table(ds / "coordinates.star")
        ex = df[(df["rlnMicrographName"] == "mic_0000.mrc") & (df["cryoshotStructureName"] == "1bxn")].iloc[:15]
        write_star(ds / "ex.star", ex[["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]])
    import shutil

    from cryoshot.picking.workflow import pick

    out = root / "speed_out"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    r = pick([str(ds / "mic_0000.mrc")], ds / "ex.star", out, PickConfig(diameter_A=160.0), model=model,
             progress=False, log=lambda s: None)  # fmt: skip
    t_all = time.perf_counter() - t
    out2 = root / "speed_out2"
    shutil.rmtree(out2, ignore_errors=True)
    t = time.perf_counter()
    pick([str(ds / "mic_0001.mrc")], None, out2, PickConfig(diameter_A=160.0), model=str(out / "picker.pt"),
         progress=False, log=lambda s: None)  # fmt: skip
    t_q = time.perf_counter() - t
    print(f"4096^2 at 1 Å/px, 160 Å particle, {torch.get_num_threads()} threads: stage 1 {r.stage1['seconds']:.1f} s "
          f"({r.stage1['steps']} steps); whole first run {t_all:.1f} s; a query micrograph end to end "
          f"(read, bin, scan, threshold, write) {t_q:.2f} s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--root", default=None, help="datasets folder (default runs/bench_picking, or _rN for a replicate)")
    ap.add_argument(
        "--replicate",
        type=int,
        default=0,
        help="N > 0: other micrographs and exemplars of the same targets (seed BENCH_SEED + 1000 N)",
    )
    ap.add_argument("--quick", action="store_true", help="one SNR, 3 micrographs per dataset")
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--json", default=None)
    ap.add_argument("--speed", action="store_true", help="only the timing of a 4096^2 micrograph")
    ap.add_argument(
        "--view-shift",
        type=float,
        default=None,
        help="view pixels a candidate may move to its best view score (default: PickConfig's)",
    )
    ap.add_argument(
        "--diameter-scale",
        type=float,
        default=None,
        help="the fraction of the typed diameter cryoshot bins for (default: PickConfig's)",
    )
    ap.add_argument("--targets", nargs="+", default=list(DATASETS), choices=list(DATASETS), help="targets to run")
    a = ap.parse_args()
    configure_threads()
    root = Path(a.root or ("runs/bench_picking" + (f"_r{a.replicate}" if a.replicate else "")))
    root.mkdir(parents=True, exist_ok=True)
    if a.speed:
        speed(root, a.model)
        return
    base, _ = load_mae(resolve_picker_model(a.model))
    snrs = SNRS[:1] if a.quick else SNRS
    n_mic = 3 if a.quick else 5
    results = {}
    print(f"model {a.model}; queries: every micrograph of a dataset but the first (2048^2 at 2 Å/px), 15 exemplars; "
          "precision recall F1 over the queries")  # fmt: skip
    for k, (target, snr) in enumerate((t, s) for t in DATASETS for s in snrs):
        if target not in a.targets:  # k (the dataset's seed) stays that of the full benchmark
            continue
        ds = make_dataset(root, target, snr, n_mic, 2048, k, seed=BENCH_SEED + 1000 * a.replicate)
        cfg = PickConfig(diameter_A=DIAMETER_A[target], stage1=Stage1Config(steps=a.steps))
        if a.view_shift is not None:
            cfg.view_shift_px = a.view_shift
        if a.diameter_scale is not None:
            cfg.diameter_scale = a.diameter_scale
        side = DIAMETER_A[target] / 2.0
        cands, truths, info, (ref, ex_xy, queries) = run_cryoshot(base, ds, target, cfg, 15)
        fused = cfg.template_weight > 0 or cfg.view_weight > 0
        rows = {f"cryoshot {r}" + (" (default)" if r == DEFAULT_RULE else ""): c
                for r, c in evaluate_rows(cands, truths, side, fisher=not fused).items()}  # fmt: skip
        if fused:
            rows |= {f"cryoshot cosine only (paper) {r}": c
                     for r, c in evaluate_rows(info.pop("cosine_cands"), truths, side).items()}  # fmt: skip
        info.pop("cosine_cands", None)
        if cfg.work_diameter_A != cfg.diameter_A:  # the baseline as it always was, binned for the typed diameter
            ref, ex_xy, queries = baseline_inputs(ds, cfg.diameter_A, base.config.particle_px)
        base_c = template_baseline([ref], ex_xy, queries, base.config.particle_px)
        b_rows = evaluate_rows(base_c, truths, side)
        rows["template NCC tail"] = b_rows["tail"]
        rows["template NCC best (oracle)"] = b_rows["best (oracle)"]
        if a.ablations:
            variants = {
                "no SCS loss (beta=0)": dict(stage1=Stage1Config(steps=a.steps, loss=LossConfig(beta=0.0))),
                "SCS without PU (pi=0)": dict(stage1=Stage1Config(steps=a.steps, loss=LossConfig(pi=0.0))),
                "no stage 1": dict(stage1=Stage1Config(steps=0)),
                "mean matching": dict(matching="mean"),
                "no template opinion (template weight 0)": dict(template_weight=0.0),
                "no view opinion (view weight 0)": dict(view_weight=0.0),
                "stride 2": dict(stride_px=2),
                "stride 6": dict(stride_px=6),
                "stride 8": dict(stride_px=8),
            }
            for name, kw in variants.items():
                c2, t2, inf2, _ = run_cryoshot(base, ds, target, dataclasses.replace(cfg, **kw), 15)
                rows[name] = evaluate_rows(c2, t2, side, not fused)[DEFAULT_RULE]
                info[f"s_per_mic {name}"] = inf2["s_per_mic"]
            c2, t2, _, _ = run_cryoshot(base, ds, target, cfg, 15, pretrained=False)
            rows["no pre-training"] = evaluate_rows(c2, t2, side, not fused)[DEFAULT_RULE]
            for n_ex in (1, 5, 25):
                c2, t2, _, _ = run_cryoshot(base, ds, target, cfg, n_ex)
                rows[f"{n_ex} exemplars"] = evaluate_rows(c2, t2, side, not fused)[DEFAULT_RULE]
        name = f"{target} (+{', '.join(DATASETS[target])}) SNR {snr:g}"
        print(f"\n{name}: stage 1 {info['stage1_s']:.1f} s, stage 2 {info['s_per_mic']:.2f} s per micrograph, "
              f"pi {info['pi']:.3f}")  # fmt: skip
        for r, c in rows.items():
            sec = f" [{info[f's_per_mic {r}']:.2f} s/mic]" if f"s_per_mic {r}" in info else ""
            print(f"  {r:42s} {fmt(c)}   ({c.n_picks} picks, {c.n_truth} particles){sec}")
        results[name] = {r: c.as_dict() for r, c in rows.items()} | {"info": info}
    print("\nmean F1 over datasets:")
    keys = list(next(iter(results.values())).keys())
    for r in keys:
        if r != "info":
            print(f"  {r:42s} {np.mean([v[r]['f1'] for v in results.values()]):.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
