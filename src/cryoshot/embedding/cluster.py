"""Clustering embeddings: PCA, k-means, the elbow and an automatic k, agreement with labels.

The thesis picks k by eye from an elbow plot of k-means inertia against k. Here the
kneedle rule (Satopää et al. 2011) picks it: with the curve and k both scaled to [0, 1]
over k = 1 .. k_max, the knee is the k farthest below the straight line joining the ends
of the curve. Applied to the inertia itself, kneedle stops one cluster early whenever the
last real split removes little inertia compared with the first ones (two close clusters
among distant ones); applied to the logarithm of the inertia (the default, ``log-kneedle``)
every split that removes a constant fraction counts alike, and the knee falls where the
drops turn into the slow decline of splitting noise. ``--k N`` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from cryoshot.errors import CryoshotError


def reduce_dimensions(z: np.ndarray, n_components: int = 50, seed: int = 0) -> np.ndarray:
    """PCA of (N, E) features to at most ``n_components`` dimensions (fewer when N or E is smaller)."""
    z = np.asarray(z, dtype=np.float64)
    n = min(n_components, z.shape[0] - 1, z.shape[1])
    if n < 1 or n >= z.shape[1]:
        return z - z.mean(0)
    return PCA(n, random_state=seed).fit_transform(z)


def kmeans(z: np.ndarray, k: int, seed: int = 0, n_init: int = 10) -> tuple[np.ndarray, float]:
    """k-means labels (N,) in 0..k-1 and the inertia (sum of squared distances to the centres)."""
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(z)
    return km.labels_.astype(np.int64), float(km.inertia_)


ELBOW_MAX_POINTS = 2000  # the elbow is drawn from a random subset of this many points at most


def elbow_curve(
    z: np.ndarray, k_max: int, seed: int = 0, n_init: int = 4, max_points: int = ELBOW_MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """k = 1 .. k_max and the k-means inertia of each (k = 1: the total scatter).

    Large sets are subsampled to ``max_points`` (seeded): the curve's shape, which is all the
    kneedle rule uses, does not need every point, and k-means for 20 values of k on hundreds of
    thousands of particles would otherwise dominate the clustering's time.
    """
    ks = np.arange(1, k_max + 1)
    scale = 1.0
    if len(z) > max_points:  # inertia scaled back to the whole set
        scale = len(z) / max_points
        z = z[np.sort(np.random.default_rng([seed, 47]).choice(len(z), max_points, replace=False))]
    zc = z - z.mean(0)
    inertia = [float((zc**2).sum())]
    inertia += [kmeans(z, int(k), seed, n_init)[1] for k in ks[1:]]
    return ks, scale * np.asarray(inertia)


K_RULES = ("log-kneedle", "kneedle", "last-drop")


def kneedle(ks: np.ndarray, inertia: np.ndarray, rule: str = "log-kneedle") -> int:
    """The k at the knee of a decreasing inertia curve (kneedle on log inertia, or on inertia)."""
    if rule not in K_RULES:
        raise CryoshotError(f"unknown rule for k '{rule}'; choose one of {', '.join(K_RULES)}")
    ks = np.asarray(ks, float)
    y = np.asarray(inertia, float)
    if rule == "last-drop":
        return last_significant_drop(ks, y)
    if rule == "log-kneedle":
        y = np.log(np.maximum(y, 1e-12 * max(float(y.max()), 1e-300)))
    if len(ks) < 3 or y[0] <= y[-1]:
        return int(ks[0] if len(ks) < 2 else ks[1])
    xn = (ks - ks[0]) / (ks[-1] - ks[0])
    yn = (y - y[-1]) / (y[0] - y[-1])
    diff = (1 - xn) - yn  # distance below the chord from (0, 1) to (1, 0)
    return int(ks[int(np.argmax(diff))])


def last_significant_drop(ks: np.ndarray, inertia: np.ndarray, factor: float = 2.0) -> int:
    """The largest k whose split still removes ``factor`` x more log-inertia than splitting noise does.

    The noise level is the median drop of log inertia over the upper half of the curve.
    """
    ks = np.asarray(ks, float)
    y = np.log(np.maximum(np.asarray(inertia, float), 1e-300))
    if len(ks) < 4:
        return int(ks[min(1, len(ks) - 1)])
    drops = y[:-1] - y[1:]  # drops[i]: from k = ks[i] to ks[i + 1]
    base = float(np.median(drops[len(drops) // 2 :]))
    sig = np.nonzero(drops > factor * max(base, 1e-12))[0]
    return int(ks[sig.max() + 1]) if len(sig) else int(ks[1])


def default_k_max(n: int) -> int:
    """Largest k the elbow tries: 20, fewer for small sets (at least 5 images per cluster)."""
    return int(max(2, min(20, n // 5)))


def check_k(k: int | None, n: int) -> None:
    """Clear errors for a k that cannot cluster ``n`` images."""
    if k is not None and k < 2:
        raise CryoshotError(f"--k {k} is not a clustering: use at least 2 clusters, or --k auto")
    if n < 3:
        raise CryoshotError(f"only {n} image(s): clustering needs at least 3")
    if k is not None and k > n:
        raise CryoshotError(f"--k {k} asks for more clusters than there are images ({n}); use a smaller --k")


@dataclass
class Clustering:
    """Labels (N,) 0..k-1, the chosen k, whether it was automatic, the elbow curve."""

    labels: np.ndarray
    k: int
    k_auto: int | None
    ks: np.ndarray | None
    inertia: np.ndarray | None


def cluster_features(
    z: np.ndarray, k: int | None = None, *, k_max: int | None = None, seed: int = 0, rule: str = "log-kneedle"
) -> Clustering:
    """k-means on (N, F) features; k from the kneedle rule unless given.

    The elbow curve is always computed (for the plot); with ``k`` given, the automatic
    choice is still reported.
    """
    n = len(z)
    check_k(k, n)
    k_max = default_k_max(n) if k_max is None else k_max
    if k is not None:
        k_max = max(k_max, min(k + 2, n))
    k_max = min(k_max, n)
    ks, inertia = elbow_curve(z, k_max, seed)
    k_auto = kneedle(ks, inertia, rule)
    k_use = k if k is not None else max(2, k_auto)
    labels, _ = kmeans(z, k_use, seed)
    return Clustering(labels=labels, k=k_use, k_auto=k_auto, ks=ks, inertia=inertia)


def agreement(labels_true: np.ndarray, labels_pred: np.ndarray) -> dict[str, float]:
    """Adjusted Rand index and normalised mutual information of a clustering against known labels."""
    t = np.asarray(labels_true).astype(str)
    return {
        "ari": float(adjusted_rand_score(t, labels_pred)),
        "nmi": float(normalized_mutual_info_score(t, labels_pred)),
    }


def similarity_matrix(z: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean cosine similarity of embeddings, group against group (thesis Fig. 3).

    Returns the group names (sorted) and the (G, G) matrix; diagonal entries exclude self-pairs.
    """
    u = np.asarray(z, float)
    u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    names, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    g = len(names)
    onehot = np.zeros((len(u), g))
    onehot[np.arange(len(u)), inv] = 1
    sums = onehot.T @ u  # (G, E)
    counts = onehot.sum(0)
    tot = sums @ sums.T  # sum over pairs of cosines
    self_pairs = np.diag(np.diag(onehot.T @ (u * u).sum(1, keepdims=True) * np.ones((1, g))))
    pairs = np.outer(counts, counts) - np.diag(counts)
    m = (tot - self_pairs) / np.maximum(pairs, 1)
    return names, m
