"""Automatic k from aligned class averages: over-cluster, then merge classes that show the same thing.

The elbow of the embedding's k-means finds the structures of a mixture but not always the
views within them (docs/benchmarks.md, "Automatic k"). After alignment the class averages
say more: two classes that hold the same view have averages that agree, after the best
in-plane rotation and shift, as well as each agrees with itself. Each class's reliability
is measured by its split-half correlation (Spearman-Brown corrected to the whole class);
the similarity of two classes is their aligned correlation divided by the geometric mean of
their reliabilities (1 for classes of one view, up to noise). Classes are merged by average
linkage while that similarity is at least ``rho``.

At low SNR the split-half correlation is inflated by reference bias (the halves were aligned
to an average that contains them), so classes stop merging; the rule therefore applies only
when the classes are reliable (median reliability at least ``min_reliability``), and the
caller keeps the elbow's k otherwise. Both settings were chosen on sets of the training
structures (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from cryoshot.embedding.align2d import align_to_references, centre_images, lowpass

MERGE_RHO = 0.95
MIN_RELIABILITY = 0.96


@dataclass
class Merge:
    """``groups`` (K,): the merged class of each over-clustered class; ``reliable``: whether the rule applied."""

    groups: np.ndarray
    k: int
    reliability: np.ndarray
    similarity: np.ndarray
    reliable: bool


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-12))


def merge_classes(
    aligned: np.ndarray,
    labels: np.ndarray,
    k: int,
    *,
    rho: float = MERGE_RHO,
    min_reliability: float = MIN_RELIABILITY,
    lowpass_frac: float = 0.35,
) -> Merge:
    """Merge over-clustered classes whose aligned averages agree.

    Parameters
    ----------
    aligned : (N, D, D) images, each aligned to its class (as the refinement left them)
    labels : (N,) classes 0..k-1
    rho : the similarity (aligned correlation over the reliabilities' geometric mean) to merge at
    min_reliability : the median reliability below which the rule does not apply
    lowpass_frac : low-pass of the averages before comparing them (fraction of Nyquist)
    """
    averages, rel = [], []
    for c in range(k):
        m = np.nonzero(labels == c)[0]
        averages.append(aligned[m].mean(0) if len(m) else np.zeros(aligned.shape[1:], np.float32))
        if len(m) < 4:
            rel.append(0.0)
            continue
        halves = lowpass(torch.from_numpy(np.stack([aligned[m[0::2]].mean(0), aligned[m[1::2]].mean(0)])), lowpass_frac)
        r = max(_corr(halves[0].numpy(), halves[1].numpy()), 1e-3)
        rel.append(2 * r / (1 + r))
    rel_a = np.asarray(rel)
    a = centre_images(lowpass(torch.from_numpy(np.stack(averages).astype(np.float32)), lowpass_frac)).numpy()
    sim = np.eye(k)
    for c in range(k):  # each average aligned to class c's, in-plane rotation and shift
        sim[:, c] = align_to_references(a, a[c : c + 1], n_angles=72, max_shift_px=4).score
    sim = (sim + sim.T) / 2 / np.sqrt(np.outer(np.maximum(rel_a, 1e-3), np.maximum(rel_a, 1e-3)))
    np.fill_diagonal(sim, 1.0)
    reliable = bool(np.median(rel_a) >= min_reliability)
    if not reliable or k < 2:
        return Merge(np.arange(k), k, rel_a, sim, reliable)
    dist = np.clip(1.0 - sim, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    groups = fcluster(linkage(squareform(dist, checks=False), "average"), t=1.0 - rho, criterion="distance") - 1
    return Merge(groups.astype(int), int(groups.max() + 1), rel_a, sim, reliable)
