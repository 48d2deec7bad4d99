"""The cascade (issue: 3D accuracy): accuracy and cost as the share of queries verified by template matching grows.

ProtoNet-CE (the shipped model) ranks every query; queries whose top-two probability gap is
below the margin are verified by wedge-constrained template matching. For each margin:
5-way accuracy ± 95% CI over seeded episodes, the share verified, and seconds per episode
(scoring only: embedding and the working-grid resampling are done once for the pool, and
are cheap next to the rotation search). Margin 0 is ProtoNet-CE; margin 1.01 verifies
everything (template matching, plus the learned pass).

    .venv/bin/python benchmarks/bench_cascade.py --tune          # training structures: choose the default
    .venv/bin/python benchmarks/bench_cascade.py [--snr 0.03]    # the novel structures: the curve
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cryoshot.data.episodes import EpisodeSampler
from cryoshot.evaluate.metrics import mean_ci95
from cryoshot.fewshot.methods import make_method
from cryoshot.models.loading import load_model
from cryoshot.pretrained import resolve_model
from cryoshot.simulate.splits import NOVEL_STRUCTURES, TRAIN_STRUCTURES
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator

BENCH_SEED = 777  # the novel benchmark's simulation seed (bench_fewshot.py)
TUNE_SEED = 4242  # training structures (bench_template.py --tune)
MARGINS = (0.0, 0.2, 0.5, 0.8, 1.01)


def curve(names, snr: float, seed: int, episodes: int, shots, margins, per_class: int = 40, tops=(0,),
          fuses=(False,), shot_temperatures: dict | None = None) -> None:  # fmt: skip
    """Accuracy, share verified and seconds per episode for each (verify_top, margin); top 0 = every class."""
    structs = load_structures(list(names), 10.0, 40)
    b = SubtomogramSimulator(structs, SubtomogramConfig(snr=snr, seed=seed)).simulate(range(per_class * len(structs)))
    net, _ = load_model(resolve_model("default"))
    cas = make_method("cascade", net)
    t0 = time.perf_counter()
    z = cas.embed(b.volumes, 10.0, progress=False)
    embed_s = time.perf_counter() - t0
    print(f"\n## {len(names)} structures, SNR {snr}, 5-way, 15 queries, {episodes} episodes "
          f"(pool of {len(z)} embedded in {embed_s:.0f} s)\n")  # fmt: skip
    print("| shot | verify top | fuse | margin | accuracy | share verified | s / episode | speed-up vs template |")
    print("|---|---|---|---|---|---|---|---|")
    for shot in shots:
        sampler = EpisodeSampler(b.labels, 5, shot, 15, seed=1)
        if shot_temperatures:
            cas.temperature = shot_temperatures[shot]
            print(f"(shot {shot}: calibration temperature {cas.temperature:g})")
        rows = []
        settings = [(top, f, m) for top in tops for f in fuses for m in margins if m <= 1.0] + [(0, False, 1.01)]
        for top, fuse, margin in settings:  # template matching (everything verified, not fused) last
            cas.verify_margin, cas.verify_top, cas.fuse = margin, top or None, fuse
            accs, shares, secs = [], [], 0.0
            for e in range(episodes):
                ep = sampler.episode(e)
                zs, zq = z[ep.support.ravel()], z[ep.query.ravel()]
                ts = torch.as_tensor(ep.support_targets)
                t = time.perf_counter()
                with torch.no_grad():
                    pred = cas.scores(zs, ts, zq, 5).argmax(1).numpy()
                secs += time.perf_counter() - t
                accs.append(float((pred == ep.query_targets).mean()))
                shares.append(cas.last_verified)
            acc, ci = mean_ci95(np.array(accs))
            rows.append((top or "all", "yes" if fuse else "no", margin, acc, ci, float(np.mean(shares)),
                         secs / episodes))  # fmt: skip
        t_full = rows[-1][-1]
        for top, fuse, margin, acc, ci, share, sec in rows:
            speedup = f"{t_full / sec:.1f}x" if sec > 0 else ""
            print(f"| {shot} | {top} | {fuse} | {margin:g} | {acc:.3f} ± {ci:.3f} | {share:.2f} | {sec:.2f} | "
                  f"{speedup} |", flush=True)  # fmt: skip


def calibrate(snrs=(0.02, 0.01), n_classes: int = 30, per_class: int = 40, episodes: int = 100) -> float:
    """Temperature T of the learned probabilities, softmax(log p / T), fitted by NLL on held-out classes.

    The classes are the training runs' validation procedural structures (never trained on, never
    the novel ones), at SNRs low enough that the learned method makes mistakes to calibrate on;
    5-way 1- and 5-shot episodes, 15 queries. Prints accuracy, NLL and expected calibration
    error before and after, and T fitted on each shot alone; returns the pooled T.
    """
    from scipy.optimize import minimize_scalar

    net, _ = load_model(resolve_model("default"))
    learned = make_method("protonet-ce", net)
    names = [f"procedural:{100_000 + i}" for i in range(n_classes)]
    structs = load_structures(names, 10.0, 40)
    from cryoshot.fewshot.cascade import embedding_scale

    logps, targets, shots, scales = [], [], [], []
    for level, snr in enumerate(snrs):
        b = SubtomogramSimulator(structs, SubtomogramConfig(snr=snr, seed=TUNE_SEED + 10 + level)).simulate(
            range(per_class * n_classes)
        )
        z = learned.embed(b.volumes, 10.0, progress=False)
        for shot in (1, 5):
            sampler = EpisodeSampler(b.labels, 5, shot, 15, seed=level)
            for e in range(episodes):
                ep = sampler.episode(e)
                with torch.no_grad():
                    lp = learned.scores(z[ep.support.ravel()], torch.as_tensor(ep.support_targets),
                                        z[ep.query.ravel()], 5)  # fmt: skip
                logps.append(lp)
                targets.append(torch.as_tensor(ep.query_targets))
                shots.append(torch.full((len(lp),), shot))
                scales.append(torch.full((len(lp), 1), embedding_scale(z[ep.support.ravel()])))
    lp, y, shot_of = torch.cat(logps).double(), torch.cat(targets), torch.cat(shots)
    scale = torch.cat(scales).double()

    def nll(log_t: float, sel: torch.Tensor | slice = slice(None)) -> float:
        return float(torch.nn.functional.cross_entropy(torch.log_softmax(lp[sel] / np.exp(log_t), 1), y[sel]))

    def fit(sel: torch.Tensor | slice = slice(None)) -> float:
        return float(np.exp(minimize_scalar(lambda v: nll(v, sel), bounds=(-12, 8), method="bounded").x))

    t = fit()

    def ece(p: torch.Tensor) -> float:
        conf, pred = p.max(1)
        bins = torch.clamp((conf * 10).long(), max=9)
        return float(sum((bins == k).float().mean() * ((pred[bins == k] == y[bins == k]).double().mean()
                                                         - conf[bins == k].mean()).abs()
                         for k in range(10) if (bins == k).any()))  # fmt: skip

    p1, pt = lp.exp(), torch.softmax(lp / t, 1)
    print(f"\n## calibration on {n_classes} validation procedural classes, SNR {', '.join(map(str, snrs))}, "
          f"5-way 1- and 5-shot, {len(y)} queries\n")  # fmt: skip
    print(f"accuracy {float((lp.argmax(1) == y).double().mean()):.3f}; temperature T = {t:.2f}; "
          f"NLL {nll(0.0):.3f} -> {nll(np.log(t)):.3f}; ECE {ece(p1):.3f} -> {ece(pt):.3f}")  # fmt: skip
    for shot in (1, 5):
        sel = shot_of == shot
        print(f"{shot}-shot alone: accuracy {float((lp[sel].argmax(1) == y[sel]).double().mean()):.3f}; "
              f"T = {fit(sel):.2f}")  # fmt: skip
    # T proportional to the support embeddings' scale (the cascade's default): kappa = T / median squared norm
    lp = lp / scale
    for shot in (1, 5):
        sel = shot_of == shot
        print(f"{shot}-shot, T = kappa x median squared norm of the supports (mean {float(scale[sel].mean()):.0f}): "
              f"kappa = {fit(sel):.4f}")  # fmt: skip
    return t


def speed(n_query: int) -> None:
    """Classify n_query queries against 5 classes x 5 supports, from memory: protonet-ce, cascade, template; one run."""
    structs = load_structures(list(NOVEL_STRUCTURES[:5]), 10.0, 40)
    b = SubtomogramSimulator(structs, SubtomogramConfig(snr=0.03, seed=BENCH_SEED + 3)).simulate(
        range(5 * ((n_query + 25) // 5 + 1))
    )
    labels = b.labels
    sup = np.concatenate([np.flatnonzero(labels == c)[:5] for c in range(5)])
    qry = np.setdiff1d(np.arange(len(labels)), sup)[:n_query]
    ts = torch.as_tensor(labels[sup])
    net, _ = load_model(resolve_model("default"))
    print(f"\n## classify {len(qry)} queries 40^3 (SNR 0.03, 5 novel classes x 5 supports), from memory, "
          f"{torch.get_num_threads()} threads, one run\n")  # fmt: skip
    print("| method | seconds | subtomograms/s | share verified | accuracy |")
    print("|---|---|---|---|---|")
    rates = {}
    for name in ("protonet-ce", "cascade", "template"):
        m = make_method(name, net if name != "template" else None)
        t = time.perf_counter()
        zs = m.embed(b.volumes[sup], 10.0, progress=False)
        zq = m.embed(b.volumes[qry], 10.0, progress=False)
        shares = []
        with torch.no_grad():
            preds = []
            for s in range(0, len(zq), 75):  # ProtoNet-CE's query chunk, as classify uses it
                preds.append(m.scores(zs, ts, zq[s : s + 75], 5).argmax(1))
                shares.append(getattr(m, "last_verified", 1.0 if name == "template" else 0.0))
        dt = time.perf_counter() - t
        rates[name] = len(qry) / dt
        acc = float((torch.cat(preds).numpy() == labels[qry]).mean())
        print(f"| {name} | {dt:.1f} | {rates[name]:.1f} | {np.mean(shares):.2f} | {acc:.3f} |", flush=True)
    print(f"| ratio cascade / template | | {rates['cascade'] / rates['template']:.1f}x | | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tune", action="store_true", help="training structures, to choose the default margin")
    ap.add_argument("--tune-validation", action="store_true",
                    help="the 8 first validation procedural structures (held out from training), to choose the margin")  # fmt: skip
    ap.add_argument("--snr", type=float, nargs="+", default=[0.03])
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--shots", type=int, nargs="+", default=[5, 1])
    ap.add_argument("--margins", type=float, nargs="+", default=list(MARGINS))
    ap.add_argument(
        "--fuse",
        type=int,
        nargs="+",
        default=[0],
        help="1: verified queries multiply the template's "
        "probabilities with the learned ones; 0: they take the template's (both: 0 1)",
    )
    ap.add_argument(
        "--shot-temperatures",
        type=float,
        nargs=2,
        default=None,
        metavar=("T1", "T5"),
        help="calibration temperatures for 1-shot and 5-shot episodes (default: the method's one)",
    )
    ap.add_argument("--tops", type=int, nargs="+", default=[0],
                    help="verify_top values: match a verified query against its k best learned classes (0: all)")  # fmt: skip
    ap.add_argument("--calibrate", action="store_true", help="only: fit the temperature on validation classes")
    ap.add_argument("--speed", type=int, default=0, help="only: classify this many queries with the three methods")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.speed:
        speed(args.speed)
        return
    if args.calibrate:
        calibrate()
        return
    names, seed = (TRAIN_STRUCTURES, TUNE_SEED) if args.tune else (NOVEL_STRUCTURES, BENCH_SEED)
    if args.tune_validation:  # procedural:100000.. are the training runs' validation classes, never trained on
        names, seed = [f"procedural:{100_000 + i}" for i in range(8)], TUNE_SEED
    for snr in args.snr:
        curve(
            names,
            snr,
            seed,
            args.episodes,
            args.shots,
            args.margins,
            tops=args.tops,
            fuses=[bool(f) for f in args.fuse],
            shot_temperatures=dict(zip((1, 5), args.shot_temperatures, strict=True))
            if args.shot_temperatures
            else None,
        )


if __name__ == "__main__":
    main()
