"""Open-set decisions: when a query fits no prototype, answer "unknown".

Calibration from the support set alone (no query labels): for every class with
K >= 2 examples, each support example is held out in turn and its distance to
the prototype of the remaining examples is measured (leave-one-out, with the
model's own distance, d or d + d*). A query at a K-example prototype sits on
average a factor (1 + 1/K) / (1 + 1/(K-1)) closer than a held-out example to a
(K-1)-example prototype, so the held-out distances are scaled by that factor.
The threshold is the ``quantile`` (default 0.95) of these scaled distances times
``margin`` (default 1.5). A query whose smallest distance exceeds it is unknown.

With K = 1 (any class with a single example) there is nothing to hold out. The
scale then comes from between classes: each support example's distance to the
nearest other class, and the threshold is ``ONE_SHOT_SCALE`` x ``margin`` x their
median. ``ONE_SHOT_SCALE`` = 0.47 (0.7 x the median at the default margin) was
chosen on 30 held-out procedural validation classes (shipped model, SNR 0.05, 4
known + 4 absent classes): there it rejects 0.9% of known queries and 49% of
absent ones (``benchmarks/bench_fewshot.py`` reports it on the novel structures).
With a single class of a single example there is no scale at all: no threshold.
"""

from __future__ import annotations

import numpy as np
import torch

ONE_SHOT_SCALE = 0.47  # K = 1: threshold = ONE_SHOT_SCALE * margin * median nearest-other-class distance


def loo_threshold(
    method, support: torch.Tensor, support_labels: torch.Tensor, n: int, quantile: float = 0.95, margin: float = 1.5
):
    """Distance threshold from leave-one-out support distances, or None when every class has K = 1."""
    counts = torch.bincount(support_labels, minlength=n)
    if int(counts.min()) < 2:
        return None
    dists = []
    for i in range(len(support)):
        keep = torch.ones(len(support), dtype=torch.bool)
        keep[i] = False
        d = method.distances(support[keep], support_labels[keep], support[i : i + 1], n)[0, support_labels[i]].item()
        k = int(counts[support_labels[i]])
        dists.append(d * (1 + 1 / k) / (1 + 1 / (k - 1)))
    return float(np.quantile(dists, quantile) * margin)


def one_shot_threshold(method, support: torch.Tensor, support_labels: torch.Tensor, n: int, margin: float = 1.5):
    """K = 1 threshold from between-class distances of the supports, or None with a single class."""
    if n < 2:
        return None
    nearest = []
    for i in range(len(support)):
        keep = support_labels != support_labels[i]
        kept = support_labels[keep]
        remap = torch.as_tensor(np.searchsorted(np.unique(kept.numpy()), kept.numpy()))
        nearest.append(method.distances(support[keep], remap, support[i : i + 1], n - 1)[0].min().item())
    return float(ONE_SHOT_SCALE * margin * np.median(nearest))


def support_threshold(method, support: torch.Tensor, support_labels: torch.Tensor, n: int, quantile: float = 0.95,
                      margin: float = 1.5):  # fmt: skip
    """The unknown threshold of a support set: leave-one-out when every class has K >= 2, else the K = 1 rule."""
    thr = loo_threshold(method, support, support_labels, n, quantile, margin)
    return thr if thr is not None else one_shot_threshold(method, support, support_labels, n, margin)
