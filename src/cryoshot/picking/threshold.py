"""Automatic per-micrograph score thresholds for the picks left after non-maximum suppression."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

THRESHOLD_RULES = ("density", "tail", "gmm", "gmm3", "gmm3-pooled")
# rules fitted once to the candidates of all micrographs of a run (one threshold for all); on one
# micrograph's scores alone each is the rule it names before the suffix
POOLED_RULES = {"gmm3-pooled": "gmm3"}
POOLED_MAX_SCORES = 200_000  # a seeded subsample beyond this many candidates (the fit needs no more)


def density_threshold(scores: np.ndarray, k: int = 5, window: int = 10) -> float:
    """The paper's rule (§3.3, §4.1.4): the sharpest change in the k-nearest-neighbour distances.

    Scores sorted in descending order; for each, the average distance to its ``k`` nearest
    neighbours in score. Particle scores are few and spread out (large distances); the
    background's are many and dense (small distances). The cut is where the average
    distance drops most sharply going down the list, the start of the dense background.
    Scores above the cut are kept.

    Parameters
    ----------
    scores : (N,) peak scores
    k : neighbours (paper: 5)
    window : scores averaged on each side when measuring the change (robust to the random spacing of
        a few scores)
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n = len(s)
    if n <= k + 1:
        return float(s[-1]) if n else np.inf
    # sorted 1D: the k nearest neighbours lie within k places on either side
    idx = np.arange(n)
    offs = [o for o in range(-k, k + 1) if o]
    nb = np.clip(idx[:, None] + np.array(offs)[None, :], 0, n - 1)
    dist = np.abs(s[:, None] - s[nb])
    dist[nb == idx[:, None]] = np.inf  # a clipped index is the score itself
    knn = np.sort(dist, axis=1)[:, :k].mean(axis=1)
    # the change in log distance across each position, each side averaged over ``window`` scores
    w = max(1, min(window, (n - 1) // 2))
    c = np.concatenate([[0.0], np.cumsum(np.log(knn + 1e-12))])
    i = np.arange(w, n - w + 1)
    drop = (c[i] - c[i - w]) / w - (c[i + w] - c[i]) / w
    j = int(i[np.argmax(drop)])  # scores[:j] are kept
    return float((s[j - 1] + s[j]) / 2)


def tail_threshold(scores: np.ndarray, false_alarms: float = 1.0) -> float:
    """Background-tail rule: a Gaussian fitted robustly to the bulk of the scores, cut where
    about ``false_alarms`` background peaks per micrograph are expected above it (as
    pytom-match-pick sets its threshold from a false-alarm rate)."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) < 3:
        return float(s.min()) if len(s) else np.inf
    med = np.median(s)
    lower = s[s <= med]  # the lower half is background for any particle fraction under 50%
    sigma = np.sqrt(np.mean((lower - med) ** 2)) or 1e-6
    z = norm.isf(min(0.5, false_alarms / len(s)))
    return float(med + z * sigma)


def gmm_threshold(scores: np.ndarray, seed: int = 0, components: int = 2, posterior: float = 0.5) -> float:
    """Gaussian mixture on the scores: the lowest score at which the top component's posterior reaches
    ``posterior`` (0.5: where it becomes the likelier of two).

    Two components split particles from background. Three (:func:`gmm3_threshold`) give the
    other proteins of a micrograph a component of their own between the background and the
    particles the exemplars show, and keep only the top one.
    """
    from sklearn.mixture import GaussianMixture

    s = np.asarray(scores, dtype=np.float64)[:, None]
    if len(s) < 2 * components:
        return float(s.min()) if len(s) else np.inf
    gm = GaussianMixture(components, random_state=seed).fit(s)
    hi = int(np.argmax(gm.means_[:, 0]))
    grid = np.linspace(s.min(), s.max(), 2001)[:, None]
    post = gm.predict_proba(grid)[:, hi]
    above = np.nonzero(post >= posterior)[0]
    return float(grid[above[0], 0]) if len(above) else float(s.max())


def gmm3_threshold(scores: np.ndarray, seed: int = 0) -> float:
    """Three-component Gaussian mixture: background, other particles, and the exemplars' kind on top.

    Chosen for ``auto`` on datasets of structures no network had seen (held-out procedural
    molecules) and checked on the training maps: better than the two-component cut on both
    (docs/benchmarks.md, "Three components").
    """
    return gmm_threshold(scores, seed, components=3)


def auto_threshold(scores: np.ndarray, rule: str, fisher: bool = True) -> float:
    """Threshold on ``scores`` by ``rule`` (one of :data:`THRESHOLD_RULES`).

    Cosine scores (``fisher``) are seen as Fisher's z = artanh(score), which spreads the scores
    that crowd near 1 and makes their distribution closer to normal; the cut is mapped back to a
    cosine. Scores that are already standardised (the fused figure of merit) are taken as they are.
    """
    rule = POOLED_RULES.get(rule, rule)
    cut = {"density": density_threshold, "tail": tail_threshold, "gmm": gmm_threshold, "gmm3": gmm3_threshold}.get(rule)
    if cut is None:
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {', '.join(THRESHOLD_RULES)}")
    s = np.asarray(scores, dtype=np.float64)
    if not fisher:
        return float(cut(s))
    t = cut(np.arctanh(np.clip(s, -0.999999, 0.999999)))
    return float(np.tanh(t)) if np.isfinite(t) else t


def pooled_threshold(score_lists: list[np.ndarray], rule: str, fisher: bool = True, seed: int = 0) -> float:
    """One threshold for many micrographs: ``rule`` fitted to all their candidates' scores together.

    The figure of merit is standardised per micrograph, so what differs between micrographs (ice,
    defocus, dose) is already taken out of it; one fit to a few thousand candidates is steadier
    than a three-component fit to each micrograph's few hundred, and a micrograph with few
    target particles is not forced to give its own top component. On the dev sets the pooled
    gmm3 cut beat the per-micrograph one on 15 of 19 (docs/benchmarks.md, "One cut for all
    micrographs").

    Parameters
    ----------
    score_lists : one (N_i,) array of candidate scores per micrograph
    rule : a rule of :data:`THRESHOLD_RULES` (a ``-pooled`` name or the rule it names)
    """
    s = np.concatenate([np.asarray(v, np.float64).ravel() for v in score_lists]) if score_lists else np.zeros(0)
    if len(s) > POOLED_MAX_SCORES:
        s = np.random.default_rng(seed).choice(s, POOLED_MAX_SCORES, replace=False)
    return auto_threshold(s, rule, fisher) if len(s) else np.inf


def rule_thresholds(
    score_lists: list[np.ndarray], rule: str, fisher: bool = True, fit_on: list[int] | None = None, seed: int = 0
) -> list[float]:
    """The threshold of each micrograph (one (N_i,) score array each) under ``rule``: a pooled rule is fitted
    once to the micrographs ``fit_on`` (default: all) and shared by all; any other is fitted to each micrograph
    alone (no cut, ``inf``, for one without candidates)."""
    if rule in POOLED_RULES:
        fit = score_lists if fit_on is None else [score_lists[i] for i in fit_on]
        return [pooled_threshold(fit, rule, fisher, seed)] * len(score_lists)
    return [auto_threshold(s, rule, fisher) if len(s) else np.inf for s in score_lists]
