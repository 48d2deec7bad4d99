"""Few-shot subtomogram classification on novel real structures (ProtoNet issue benchmark).

Prints a table shaped like the ProtoNet-CE paper's Tables 1 and 2: SNR 0.1, 0.05,
0.03 (box convention), 5-way 5-shot and 1-shot, 100 seeded episodes, mean ± 95%
CI, on the 8 bundled structures no model was trained on. Also prints open-set
AUROC, classify throughput end to end from disk, and the training cost per
episode of the default encoder against the paper's, measured in one run.

    .venv/bin/python benchmarks/bench_fewshot.py [--models NAME=PATH ...] [--template] [--skip-speed]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cryoshot.evaluate.fewshot import evaluate_episodes
from cryoshot.evaluate.metrics import auroc
from cryoshot.fewshot.methods import make_method, scores_and_distances
from cryoshot.models.embedding import embed_volumes
from cryoshot.models.loading import load_model
from cryoshot.pretrained import resolve_model
from cryoshot.simulate.datasets import write_subtomograms
from cryoshot.simulate.splits import NOVEL_STRUCTURES
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator

BENCH_SEED = 777  # simulation seed of the benchmark data (never used in training)


def novel_data(snr: float, per_class: int):
    structs = load_structures(list(NOVEL_STRUCTURES), 10.0, 40)
    sim = SubtomogramSimulator(structs, SubtomogramConfig(snr=snr, seed=BENCH_SEED))
    b = sim.simulate(range(per_class * len(structs)), with_clean=False)
    return b.volumes, b.labels, structs, sim


def accuracy_table(models: dict[str, str], snrs, episodes: int, per_class: int, template: bool = False,
                   rotations=(4,), finetune: bool = True):  # fmt: skip
    print("\n## Accuracy on the 8 novel bundled structures (mean ± 95% CI)\n")
    print("| model | rotations | method | distance | " + " | ".join(f"SNR {s} 5-shot | SNR {s} 1-shot" for s in snrs)
          + " |")  # fmt: skip
    print("|---|---|---|---|" + "---|---|" * len(snrs))
    data = {s: novel_data(s, per_class) for s in snrs}
    for (mname, path), rot in ((mp, r) for mp in models.items() for r in rotations):
        net, ck = load_model(path)
        emb = {s: embed_volumes(net, data[s][0], 10.0, progress=False, rotations=rot) for s in snrs}
        rows = [("protonet", "d")]
        if net.adapter is not None:
            rows += [("protonet-ce", "d*"), ("protonet-ce", "d+d*")]
        rows += [("finetune", "-")] if finetune else []
        for method, dist in rows:
            m = make_method(method, net, None if dist == "-" else dist, seed=0, rotations=rot)
            cells = []
            for s in snrs:
                for shot in (5, 1):
                    r = evaluate_episodes(m, emb[s], data[s][1], name=method, way=5, shot=shot, query=15,
                                          episodes=episodes, seed=0, progress=False)  # fmt: skip
                    cells.append(f"{r['accuracy_mean']:.3f} ± {r['accuracy_ci95']:.3f}")
            print(f"| {mname} | {rot} | {method} | {dist} | " + " | ".join(cells) + " |", flush=True)
    if template:
        m = make_method("template", None)
        cells = []
        for s in snrs:
            z = m.embed(data[s][0], 10.0, progress=False)
            for shot in (5, 1):
                r = evaluate_episodes(m, z, data[s][1], name="template", way=5, shot=shot, query=15,
                                      episodes=episodes, seed=0, progress=False)  # fmt: skip
                cells.append(f"{r['accuracy_mean']:.3f} ± {r['accuracy_ci95']:.3f}")
        print("| (no model) | - | template | NCC | " + " | ".join(cells) + " |", flush=True)
    return data


def open_set(methods: dict, data, snrs, episodes: int, shots=(5,)):
    """Open-set: 4 classes in the support, queries from those 4 and from 4 absent classes.

    ``methods`` maps a row label to a method object (shared interface); every method sees the same episodes.
    The threshold is ``classify``'s (leave-one-out for K >= 2, the between-class rule for K = 1).
    """
    from cryoshot.fewshot.openset import support_threshold

    print("\n## Open set: queries of absent classes (4 known + 4 absent classes)\n")
    print("| method | K | SNR | AUROC (min distance) | absent -> unknown | known -> unknown | known accuracy |")
    print("|---|---|---|---|---|---|---|")
    for (label, m), shot, s in ((lm, k, s) for lm in methods.items() for k in shots for s in snrs):
        vols, labels = data[s][0], data[s][1]
        z = m.embed(vols, 10.0, progress=False)
        aucs, unk_abs, unk_known, acc = [], [], [], []
        for e in range(episodes):
            rng = np.random.default_rng([5, e])
            classes = rng.permutation(8)
            known, absent = classes[:4], classes[4:]
            sup = np.concatenate([rng.choice(np.nonzero(labels == c)[0], shot, replace=False) for c in known])
            rest = np.setdiff1d(np.arange(len(labels)), sup)
            qk = rng.choice(rest[np.isin(labels[rest], known)], 40, replace=False)
            qa = rng.choice(rest[np.isin(labels[rest], absent)], 40, replace=False)
            ts = torch.as_tensor(np.searchsorted(np.sort(known), labels[sup]))
            with torch.no_grad():
                sc, d = scores_and_distances(m, z[sup], ts, z[np.concatenate([qk, qa])], 4)
                dk, da = d[:40], d[40:]
                thr = support_threshold(m, z[sup], ts, 4)
            aucs.append(auroc(da.min(1).values.numpy(), dk.min(1).values.numpy()))
            unk_abs.append(float((da.min(1).values > thr).float().mean()))
            unk_known.append(float((dk.min(1).values > thr).float().mean()))
            pred = np.sort(known)[sc[:40].argmax(1).numpy()]
            acc.append(float((pred == labels[qk]).mean()))
        print(f"| {label} | {shot} | {s} | {np.mean(aucs):.3f} | {np.mean(unk_abs):.3f} | {np.mean(unk_known):.3f} | "
              f"{np.mean(acc):.3f} |", flush=True)  # fmt: skip


def speed(model_path: str, n: int = 2000, rotations=(1, 4)):
    from cryoshot.fewshot.classify import classify_sets
    from cryoshot.models.encoders3d import Encoder3d, encoder_config

    print("\n## Speed (2 CPU threads unless stated)\n")
    structs = load_structures(list(NOVEL_STRUCTURES), 10.0, 40)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sim = SubtomogramSimulator(structs, SubtomogramConfig(snr=0.05, seed=BENCH_SEED + 1))
        write_subtomograms(sim, 40, tmp / "sup", progress=False)
        write_subtomograms(SubtomogramSimulator(structs, SubtomogramConfig(snr=0.05, seed=BENCH_SEED + 2)), n,
                           tmp / "qry", progress=False)  # fmt: skip
        before = os.environ.get("CRYOSHOT_PRECISION")
        from cryoshot.fewshot.classify import ClassifyConfig

        settings = [(p, r) for p in ("fp32", "auto") for r in rotations]
        for precision, rot in settings * 2:  # alternated, twice: the machine is noisy
            os.environ["CRYOSHOT_PRECISION"] = precision
            t = time.perf_counter()
            classify_sets(tmp / "sup" / "particles.star", tmp / "qry" / "particles.star", tmp / "p.star",
                          ClassifyConfig(rotations=rot), model_path=model_path, progress=False, force=True)  # fmt: skip
            dt = time.perf_counter() - t
            print(f"| classify end to end from disk, {n} queries + 40 supports, 40^3, precision {precision}, "
                  f"rotations {rot} | {dt:.2f} s | {n / dt:.0f} subtomograms/s |", flush=True)  # fmt: skip
        if before is None:
            os.environ.pop("CRYOSHOT_PRECISION")
        else:
            os.environ["CRYOSHOT_PRECISION"] = before
    x = torch.randn(100, 1, 40, 40, 40)
    res = {}
    for name, reps in (("cryoshot-small", 10), ("protonet3d-paper", 2)):
        torch.manual_seed(0)
        enc = Encoder3d(encoder_config(name))
        opt = torch.optim.Adam(enc.parameters(), 1e-4)
        times = []
        for _ in range(reps + 1):
            t = time.perf_counter()
            z = enc(x)
            zs, zq = z[:25], z[25:]
            protos = zs.view(5, 5, -1).mean(1)
            logits = -torch.cdist(zq, protos).pow(2)
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(5).repeat_interleave(15))
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        enc.eval()
        with torch.no_grad():
            xb = torch.randn(256, 1, 40, 40, 40)
            enc(xb[:16])
            t = time.perf_counter()
            enc(xb)
            inf = 256 / (time.perf_counter() - t)
        res[name] = (min(times[1:]), float(np.median(times[1:])), inf)
        print(
            f"| {name}: training episode 5-way 5-shot 15-query (100 volumes 40^3), fp32 | min {res[name][0]:.2f} s, median {res[name][1]:.2f} s | inference {inf:.0f} volumes/s |"
        )
    a, b = res["cryoshot-small"], res["protonet3d-paper"]
    print(f"| ratio paper / default | training episode {b[0] / a[0]:.1f}x | inference {a[2] / b[2]:.1f}x |")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="*", default=None,
                    help="NAME=PATH checkpoints (default: the shipped model; 'none': no model rows)")  # fmt: skip
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-open-set", action="store_true")
    ap.add_argument("--only-speed", action="store_true")
    ap.add_argument("--only-open-set", action="store_true")
    ap.add_argument("--open-set-fscc", nargs="*", default=[], help="LABEL=PATH fscc models for the open-set table")
    ap.add_argument("--precision", default=None, help="fp32, bf16 or auto inference (sets CRYOSHOT_PRECISION)")
    ap.add_argument("--open-set-shots", type=int, nargs="+", default=[5, 1], help="K of the open-set episodes")
    ap.add_argument("--template", action="store_true", help="add the template-matching row (same episodes)")
    ap.add_argument("--rotations", type=int, nargs="+", default=[4], help="embedding rotations, one row set each")
    ap.add_argument("--no-finetune", action="store_true", help="skip the fine-tune rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.precision:
        os.environ["CRYOSHOT_PRECISION"] = args.precision
    if args.models == ["none"]:
        models = {}
    elif args.models:
        models = dict(m.split("=", 1) for m in args.models)
    else:
        models = {"shipped": str(resolve_model("default"))}
    print(f"# torch {torch.__version__}, {args.threads} threads, {time.strftime('%Y-%m-%d')}, "
          f"precision {os.environ.get('CRYOSHOT_PRECISION', 'auto')}")  # fmt: skip
    snrs = [0.1, 0.05, 0.03]
    if args.only_speed:
        speed(str(resolve_model("default")), rotations=args.rotations)
        return
    if args.only_open_set:
        data = {s: novel_data(s, args.per_class) for s in snrs}
    else:
        data = accuracy_table(models, snrs, args.episodes, args.per_class, args.template, args.rotations,
                              not args.no_finetune)  # fmt: skip
    if not args.skip_open_set:
        nets = (load_model(p)[0] for p in models.values())
        ce = next((net for net in nets if net.adapter is not None), None)  # the first ProtoNet-CE model
        methods = {"ProtoNet-CE (shipped)": make_method("protonet-ce", ce)} if ce is not None else {}
        for item in args.open_set_fscc:
            label, path = item.split("=", 1)
            methods[f"FSCC ({label})"] = make_method("fscc", load_model(path, method="fscc")[0])
        open_set(methods, data, snrs, 50, shots=args.open_set_shots)
    if args.only_open_set:
        return
    if not args.skip_speed:
        speed(str(resolve_model("default")), rotations=args.rotations)


if __name__ == "__main__":
    main()
