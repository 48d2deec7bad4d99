"""Transductive prototypes (soft k-means over the queries): does it help the learned method, and with what setting?

Semi-supervised prototypical networks (Ren et al. 2018) refine each prototype with the queries it
probably owns: c_k' = (sum_s z_s + sum_q w_qk z_q) / (K + sum_q w_qk), w = softmax(-d / T) over the
classes, iterated. `classify` sees all its queries at once, so this costs nothing but a few matrix
products. Dev sets only (never the novel structures): the training runs' validation procedural
classes and the 8 training maps, at SNRs low enough for the learned method to err; 5-way 1- and
5-shot, 15 queries per class. Prints accuracy for each (T, iterations).

Real query sets are not balanced episodes: ``--hard`` draws each class's number of queries from
3..30 and adds as many queries again from 5 classes absent from the support (other proteins);
accuracy is then on the queries of the support classes only (the 8 training maps have 3 absent).

    cd benchmarks && ../.venv/bin/python choose_transductive.py [--episodes 200] [--hard]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cryoshot.data.episodes import EpisodeSampler
from cryoshot.evaluate.metrics import mean_ci95
from cryoshot.fewshot.methods import make_method
from cryoshot.models.loading import load_model
from cryoshot.models.protonet import prototypes, squared_distances
from cryoshot.pretrained import resolve_model
from cryoshot.simulate.splits import TRAIN_STRUCTURES
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator

DEV_SEED = 5151


def transductive_prototypes(z_support: torch.Tensor, targets: torch.Tensor, z_query: torch.Tensor, n_classes: int,
                            temperature: float, iterations: int) -> torch.Tensor:  # fmt: skip
    """Prototypes refined by soft k-means over the queries: (S, E), (M, E) -> (N, E) (Ren et al. 2018, Eq. 4)."""
    one_hot = torch.nn.functional.one_hot(targets, n_classes).to(z_support.dtype)  # (S, N)
    sums, counts = one_hot.T @ z_support, one_hot.sum(0)
    protos = sums / counts[:, None]
    for _ in range(iterations):
        w = torch.softmax(-squared_distances(z_query, protos) / temperature, dim=1)  # (M, N)
        protos = (sums + w.T @ z_query) / (counts + w.sum(0))[:, None]
    return protos


def dev_sets():
    val = [f"procedural:{100_000 + i}" for i in range(30)]
    yield "validation procedural x 30, SNR 0.005", val, 0.005
    yield "training maps x 8, SNR 0.005", list(TRAIN_STRUCTURES), 0.005
    yield "validation procedural x 30, SNR 0.01", val, 0.01


def hard_episode(rng: np.random.Generator, labels: np.ndarray, z: torch.Tensor, shot: int):
    """5-way ``shot``-shot; 3..30 queries per support class, and as many from up to 5 absent classes (target -1)."""
    classes = rng.choice(np.unique(labels), min(10, len(np.unique(labels))), replace=False)
    sup, qry, yq = [], [], []
    for k, c in enumerate(classes[:5]):
        idx = rng.permutation(np.flatnonzero(labels == c))
        m = int(rng.integers(3, 31))
        sup.append(idx[:shot])
        qry.append(idx[shot : shot + m])
        yq += [k] * len(idx[shot : shot + m])
    n_known = len(yq)
    pool = np.concatenate([np.flatnonzero(labels == c) for c in classes[5:]])
    n_absent = min(n_known, len(pool))
    qry.append(rng.choice(pool, n_absent, replace=False))
    yq += [-1] * n_absent
    ts = torch.as_tensor(np.repeat(np.arange(5), shot))
    return z[np.concatenate(sup)], ts, z[np.concatenate(qry)], np.array(yq)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[20.0, 40.0, 80.0, 160.0])
    ap.add_argument("--iterations", type=int, nargs="+", default=[1, 2, 5])
    ap.add_argument("--hard", action="store_true", help="imbalanced queries plus as many from absent classes")
    args = ap.parse_args()
    torch.set_num_threads(2)
    net, _ = load_model(resolve_model("default"))
    method = make_method("protonet", net)
    settings = [(None, 0)] + [(t, i) for t in args.temperatures for i in args.iterations]
    for n, (title, names, snr) in enumerate(dev_sets()):
        structs = load_structures(names, 10.0, 40)
        b = SubtomogramSimulator(structs, SubtomogramConfig(snr=snr, seed=DEV_SEED + n)).simulate(
            range(40 * len(structs))
        )
        z = method.embed(b.volumes, 10.0, progress=False)
        print(f"\n## {title}, 5-way, 15 queries, {args.episodes} episodes\n")
        print("| T | iterations | 5-shot | 1-shot |\n|---|---|---|---|")
        accs = {s: {} for s in settings}
        for shot in (5, 1):
            sampler = EpisodeSampler(b.labels, 5, shot, 15, seed=n)
            rng = np.random.default_rng(1000 + n)
            per = {s: [] for s in settings}
            for e in range(args.episodes):
                if args.hard:
                    zs, ts, zq, yq = hard_episode(rng, b.labels, z, shot)
                else:
                    ep = sampler.episode(e)
                    zs, zq, yq = z[ep.support.ravel()], z[ep.query.ravel()], ep.query_targets
                    ts = torch.as_tensor(ep.support_targets)
                known = yq >= 0
                for t, it in settings:
                    protos = prototypes(zs, ts, 5) if t is None else transductive_prototypes(zs, ts, zq, 5, t, it)
                    pred = squared_distances(zq, protos).argmin(1).numpy()
                    per[(t, it)].append(float((pred[known] == yq[known]).mean()))
            for s in settings:
                accs[s][shot] = mean_ci95(np.array(per[s]))
        for t, it in settings:
            cells = [f"{accs[(t, it)][shot][0]:.3f} ± {accs[(t, it)][shot][1]:.3f}" for shot in (5, 1)]
            print(f"| {'-' if t is None else f'{t:g}'} | {it} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
