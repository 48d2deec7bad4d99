"""The figure of merit of ``cryoshot pick``: the MAE's cosine, the template's NCC and the Siamese
network's view similarity, each standardised over one micrograph's candidates, then mixed.

Each opinion ranks the candidates differently; on the training structures the mix ranks
target particles above distractors and background better than any one of them
(docs/benchmarks.md, "Re-ranking the candidates" and "The Siamese network's opinion"). The
weights are chosen there, never on the benchmark's novel structures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def standardise_scores(v: np.ndarray) -> np.ndarray:
    """(N,) scores -> mean 0, standard deviation 1 (just centred when they are all equal)."""
    v = np.asarray(v, np.float64)
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else v - v.mean()


def fuse_scores(cosine: np.ndarray, opinions: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """(N,) figure of merit: (1 - sum of w) z(artanh cosine) + sum of w z(opinion).

    Parameters
    ----------
    cosine : (N,) the MAE's cosine to the exemplars, -1..1 (taken as Fisher's artanh first, as the
        thresholds see it)
    opinions : (scores (N,), weight) pairs; the weights sum to at most 1. No opinions: the cosine's z.
    """
    total = float(sum(w for _, w in opinions))
    if not -1e-9 <= total <= 1 + 1e-9 or any(w < 0 for _, w in opinions):
        raise ValueError(f"opinion weights must be >= 0 and sum to at most 1, got {[w for _, w in opinions]}")
    z = np.arctanh(np.clip(np.asarray(cosine, np.float64), -0.999999, 0.999999))
    out = max(0.0, 1.0 - total) * standardise_scores(z)
    for s, w in opinions:
        out = out + w * standardise_scores(s)
    return out
