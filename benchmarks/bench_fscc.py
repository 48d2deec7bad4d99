"""FSCC ablation (paper Table 4), λ sweep (Fig. 6) and comparison with Baseline, Baseline++ and ProtoNet-CE.

All methods run on identical episodes: the 8 novel bundled structures at a
SHREC-like SNR (default 0.03), 5-way 5-shot and 1-shot, 100 seeded episodes.

    .venv/bin/python benchmarks/bench_fscc.py \
        --ce-only runs/fscc_lambda0.pt --fscc runs/fscc_lambda0.05.pt \
        --sweep 0.01=runs/fscc_lambda0.01.pt 0.05=runs/fscc_lambda0.05.pt 0.07=... 0.1=... \
        --plot docs/figures/fscc_lambda_sweep.png

The models come from ``cryoshot train fscc --supcon-weight λ`` (λ = 0 gives the
cross-entropy-only encoder with base statistics, i.e. Baseline and Baseline + DC).
Distribution calibration on the ProtoNet encoder: base statistics are computed
for the shipped model's encoder on the same training pool recipe.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from cryoshot.evaluate.fewshot import evaluate_episodes
from cryoshot.fewshot.fscc import FSCCMethod
from cryoshot.fewshot.methods import make_method
from cryoshot.models.embedding import embed_volumes
from cryoshot.models.loading import load_model
from cryoshot.models.protonet import ProtoNet
from cryoshot.pretrained import resolve_model
from cryoshot.simulate.splits import NOVEL_STRUCTURES
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator
from cryoshot.train.loop import TrainConfig, fill_base_statistics

BENCH_SEED = 777


def run(method, z, labels, shots, episodes):
    cells = []
    for shot in shots:
        r = evaluate_episodes(method, z, labels, name="x", way=5, shot=shot, query=15, episodes=episodes, seed=0,
                              progress=False)  # fmt: skip
        cells.append((r["accuracy_mean"], r["accuracy_ci95"]))
    return cells


def fmt(cells):
    return " | ".join(f"{a:.3f} ± {c:.3f}" for a, c in cells)


def protonet_with_stats(path: str, stats_items: int) -> ProtoNet:
    """The ProtoNet model's encoder with FSCC base statistics computed on its training pool recipe."""
    net, ck = load_model(path)
    cfg = TrainConfig.from_dict(ck["config"])
    cfg.stats_items_per_class = stats_items
    n_base = len(cfg.pool.structure_specs())
    model = ProtoNet(net.encoder.config, adapter=False, n_base_classes=n_base, base_stats_items=stats_items)
    model.encoder.load_state_dict(net.encoder.state_dict())
    fill_base_statistics(model, cfg, torch.device("cpu"), progress=False)
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ce-only", help="fscc model trained with --supcon-weight 0")
    ap.add_argument("--fscc", help="fscc model trained with the default λ = 0.05")
    ap.add_argument("--sweep-only", action="store_true", help="only the λ sweep")
    ap.add_argument("--sweep", nargs="*", default=[], help="LAMBDA=PATH models for the λ sweep")
    ap.add_argument("--protonet", default="default", help="ProtoNet-CE model (default: shipped)")
    ap.add_argument("--snr", type=float, default=0.03)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--stats-items", type=int, default=24)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {args.threads} threads, {time.strftime('%Y-%m-%d')}, SNR {args.snr}")
    structs = load_structures(list(NOVEL_STRUCTURES), 10.0, 40)
    b = SubtomogramSimulator(structs, SubtomogramConfig(snr=args.snr, seed=BENCH_SEED)).simulate(
        range(args.per_class * len(structs)), with_clean=False
    )
    shots = (5, 1)
    if not args.sweep_only:
        ablation(args, b, shots)
    if args.sweep:
        sweep(args, b, shots)


def ablation(args, b, shots):
    if not (args.ce_only and args.fscc):
        raise SystemExit("the ablation needs --ce-only and --fscc (or pass --sweep-only)")
    print("\n## Ablation (paper Table 4) and comparison, 5-way, 100 episodes, identical episodes\n")
    print("| encoder pre-training | classifier | 5-shot | 1-shot |\n|---|---|---|---|")
    rows = {}
    for label, path in (("cross-entropy", args.ce_only), ("cross-entropy + SCL (λ 0.05)", args.fscc)):
        net, _ = load_model(path, method="fscc")
        z = embed_volumes(net, b.volumes, 10.0, progress=False)
        for name, m in (
            ("Baseline (linear)", make_method("baseline", net)),
            ("Baseline++ (cosine)", make_method("baseline++", net)),
            ("ProtoNet prototypes (d)", make_method("protonet", net)),
            ("distribution calibration + LR", FSCCMethod(net)),
        ):
            rows[(label, name)] = run(m, z, b.labels, shots, args.episodes)
            print(f"| {label} | {name} | {fmt(rows[(label, name)])} |", flush=True)
    pn = protonet_with_stats(str(resolve_model(args.protonet)), args.stats_items)
    z = embed_volumes(pn, b.volumes, 10.0, progress=False)
    net, _ = load_model(resolve_model(args.protonet))
    for name, m in (("ProtoNet-CE d + d*", make_method("protonet-ce", net)), ("distribution calibration + LR",
                    FSCCMethod(pn))):  # fmt: skip
        print(
            f"| episodic ProtoNet (shipped) | {name} | {fmt(run(m, z, b.labels, shots, args.episodes))} |", flush=True
        )


def sweep(args, b, shots):
    print("\n## λ sweep (FSCC, distribution calibration + LR)\n\n| λ | 5-shot | 1-shot |\n|---|---|---|")
    pts = []
    for item in args.sweep:
        lam, path = item.split("=", 1)
        net, _ = load_model(path, method="fscc")
        z = embed_volumes(net, b.volumes, 10.0, progress=False)
        cells = run(FSCCMethod(net), z, b.labels, shots, args.episodes)
        pts.append((float(lam), cells))
        print(f"| {lam} | {fmt(cells)} |", flush=True)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pts.sort()
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for k, shot in enumerate(shots):
            ax.errorbar([p[0] for p in pts], [p[1][k][0] for p in pts], yerr=[p[1][k][1] for p in pts],
                        marker="o", capsize=3, label=f"5-way {shot}-shot")  # fmt: skip
        ax.set_xlabel("λ (weight of the supervised contrastive loss)")
        ax.set_ylabel(f"accuracy, SNR {args.snr}")
        ax.legend()
        fig.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
