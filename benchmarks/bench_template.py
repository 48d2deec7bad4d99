"""Template matching: tuning on training structures, speed against ProtoNet-CE, and averaging.

    .venv/bin/python benchmarks/bench_template.py --tune        # angular step / low-pass / refinement
    .venv/bin/python benchmarks/bench_template.py --speed       # queries per second, ratio to ProtoNet-CE
    .venv/bin/python benchmarks/bench_template.py --averaging   # resolution of class averages

Tuning uses the 8 bundled *training* structures with their own simulation seed,
never the novel structures of the accuracy benchmark. Accuracy on the novel
structures is in ``bench_fewshot.py --template`` (same episodes as ProtoNet).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from cryoshot.align.average import AverageConfig, refine_class, superpose
from cryoshot.align.resolution import fsc_curve, resolution_at
from cryoshot.align.search import AlignConfig
from cryoshot.evaluate.fewshot import evaluate_episodes
from cryoshot.fewshot.methods import make_method
from cryoshot.fewshot.template import TemplateMethod
from cryoshot.models.loading import load_model
from cryoshot.pretrained import resolve_model
from cryoshot.simulate.splits import NOVEL_STRUCTURES, TRAIN_STRUCTURES
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator

TUNE_SEED = 4242  # simulation seed of the tuning data (training structures)
BENCH_SEED = 777  # the accuracy benchmark's seed (novel structures), as in bench_fewshot.py


def simulate(names, snr, per_class, seed):
    structs = load_structures(list(names), 10.0, 40)
    sim = SubtomogramSimulator(structs, SubtomogramConfig(snr=snr, seed=seed))
    b = sim.simulate(range(per_class * len(structs)))
    return b, structs


def tune(episodes: int):
    b, _ = simulate(TRAIN_STRUCTURES, 0.05, 30, TUNE_SEED)
    print("\n## Template matching settings on the 8 training structures (SNR 0.05, 5-way, 15 queries)\n")
    print("| angular step | refine levels | low-pass Å | rotations | 5-shot acc | 1-shot acc | s / episode (5-shot) |")
    print("|---|---|---|---|---|---|---|")
    settings = [(30, 0, 40), (30, 0, 60), (45, 0, 40), (45, 1, 40), (20, 0, 40), (30, 1, 40), (30, 0, 30)]
    for step, lev, lp in settings:
        m = TemplateMethod(AlignConfig(angular_step_deg=step, refine_levels=lev, n_candidates=2, lowpass_A=lp))
        z = m.embed(b.volumes, 10.0)
        accs, secs = [], 0.0
        for shot in (5, 1):
            r = evaluate_episodes(m, z, b.labels, name="template", way=5, shot=shot, query=15, episodes=episodes,
                                  seed=1, progress=False)  # fmt: skip
            accs.append(f"{r['accuracy_mean']:.3f} ± {r['accuracy_ci95']:.3f}")
            secs = r["seconds"] / episodes if shot == 5 else secs
        n_rot = len(m._aligner.grid)
        print(f"| {step}° | {lev} | {lp} | {n_rot} | {accs[0]} | {accs[1]} | {secs:.2f} |", flush=True)


def speed(n_query: int):
    """Classify n_query subtomograms against 5 classes x 5 supports, from memory, both methods, one run."""
    b, _ = simulate(NOVEL_STRUCTURES[:5], 0.05, (n_query + 25) // 5 + 1, BENCH_SEED + 3)
    labels = b.labels
    sup = np.concatenate([np.flatnonzero(labels == c)[:5] for c in range(5)])
    qry = np.setdiff1d(np.arange(len(labels)), sup)[:n_query]
    ts = torch.as_tensor(labels[sup])
    net, _ = load_model(resolve_model("default"))
    print(
        f"\n## Classification speed, {len(qry)} queries 40^3, 5 classes x 5 supports, {torch.get_num_threads()} threads\n"
    )
    print("| method | seconds | subtomograms/s | accuracy |")
    print("|---|---|---|---|")
    rates = {}
    for name in ("protonet-ce", "template"):
        m = make_method(name, net if name != "template" else None)
        t = time.perf_counter()
        zs = m.embed(b.volumes[sup], 10.0, progress=False)
        zq = m.embed(b.volumes[qry], 10.0, progress=False)
        with torch.no_grad():
            pred = torch.cat([m.scores(zs, ts, zq[s : s + 75], 5).argmax(1) for s in range(0, len(zq), 75)])
        dt = time.perf_counter() - t
        rates[name] = len(qry) / dt
        acc = float((pred.numpy() == labels[qry]).mean())
        print(f"| {name} | {dt:.2f} | {rates[name]:.1f} | {acc:.3f} |", flush=True)
    print(f"| ratio protonet-ce / template | | {rates['protonet-ce'] / rates['template']:.1f}x | |")


def averaging(n_struct: int, per_class: int):
    """Class averages from true labels, ProtoNet-CE predictions and template predictions (SNR 0.05)."""
    b, structs = simulate(NOVEL_STRUCTURES, 0.05, per_class + 5, BENCH_SEED + 4)
    labels = b.labels
    sup = np.concatenate([np.flatnonzero(labels == c)[:5] for c in range(len(structs))])
    qry = np.setdiff1d(np.arange(len(labels)), sup)
    ts = torch.as_tensor(labels[sup])
    net, _ = load_model(resolve_model("default"))
    preds = {}
    for name in ("protonet-ce", "template"):
        m = make_method(name, net if name != "template" else None)
        zs, zq = m.embed(b.volumes[sup], 10.0, progress=False), m.embed(b.volumes[qry], 10.0, progress=False)
        with torch.no_grad():
            preds[name] = torch.cat([m.scores(zs, ts, zq[s : s + 120], len(structs)).argmax(1)
                                     for s in range(0, len(zq), 120)]).numpy()  # fmt: skip
        print(f"{name}: accuracy on the {len(qry)} queries (8-way 5-shot) {(preds[name] == labels[qry]).mean():.3f}")
    cfg = AverageConfig(align=AlignConfig(angular_step_deg=30.0, refine_levels=2, lowpass_A=30.0))
    print(f"\n## Class averages at SNR 0.05 ({per_class} queries per class; gold-standard halves)\n")
    print("| structure | particle set | particles | precision | half-map FSC 0.143 (Å) | FSC 0.5 vs truth (Å) |")
    print("|---|---|---|---|---|---|")
    for c in range(n_struct):
        truth = structs[c].density
        sets = {"true labels": qry[labels[qry] == c]}
        sets.update({f"{k} predictions": qry[p == c] for k, p in preds.items()})
        for set_name, idx in sets.items():
            prec = float((labels[idx] == c).mean()) if len(idx) else float("nan")
            res = refine_class(b.volumes[idx], 10.0, cfg, progress=False)
            moved = superpose(res.average, truth, 10.0)
            f, fsc = fsc_curve(moved, truth, 10.0)
            print(f"| {structs[c].name} | {set_name} | {len(idx)} | {prec:.3f} | {res.resolution_A:.1f} | "
                  f"{resolution_at(f, fsc, 0.5):.1f} |", flush=True)  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--averaging", action="store_true")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--queries", type=int, default=600)
    ap.add_argument("--structures", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {args.threads} threads, {time.strftime('%Y-%m-%d')}")
    if args.tune:
        tune(args.episodes)
    if args.speed:
        speed(args.queries)
    if args.averaging:
        averaging(args.structures, args.per_class)


if __name__ == "__main__":
    main()
