"""Open-set decisions: when a query fits no prototype, answer "unknown".

Calibration from the support set alone (no query labels): for every class with
K >= 2 examples, each support example is held out in turn and its distance to
the prototype of the remaining examples is measured (leave-one-out, with the
model's own distance, d or d + d*). A query at a K-example prototype sits on
average a factor (1 + 1/K) / (1 + 1/(K-1)) closer than a held-out example to a
(K-1)-example prototype, so the held-out distances are scaled by that factor.
The threshold is the ``quantile`` (default 0.95) of these scaled distances times
``margin`` (default 1.5). A query whose smallest distance exceeds it is unknown.
With K = 1 there is nothing to hold out: no threshold, every query gets a class.
"""

from __future__ import annotations

import numpy as np
import torch


def loo_threshold(method, zs: torch.Tensor, ts: torch.Tensor, n: int, quantile: float = 0.95, margin: float = 1.5):
    """Distance threshold from leave-one-out support distances, or None when every class has K = 1."""
    counts = torch.bincount(ts, minlength=n)
    if int(counts.min()) < 2:
        return None
    dists = []
    for i in range(len(zs)):
        keep = torch.ones(len(zs), dtype=torch.bool)
        keep[i] = False
        d = method.distances(zs[keep], ts[keep], zs[i : i + 1], n)[0, ts[i]].item()
        k = int(counts[ts[i]])
        dists.append(d * (1 + 1 / k) / (1 + 1 / (k - 1)))
    return float(np.quantile(dists, quantile) * margin)
