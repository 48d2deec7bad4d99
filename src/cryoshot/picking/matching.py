"""Pick-to-truth matching by box IoU (cryoMAE §4.1.3) and precision, recall, F1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


def box_iou(dx: np.ndarray, dy: np.ndarray, side: float) -> np.ndarray:
    """IoU of two axis-aligned square boxes of ``side`` whose centres differ by (dx, dy)."""
    ov = np.clip(side - np.abs(dx), 0, None) * np.clip(side - np.abs(dy), 0, None)
    return ov / (2 * side * side - ov)


@dataclass
class MatchCounts:
    """True/false positives and truths of one or more micrographs."""

    tp: int
    n_picks: int
    n_truth: int

    @property
    def precision(self) -> float:
        return self.tp / self.n_picks if self.n_picks else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.n_truth if self.n_truth else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(self.tp + other.tp, self.n_picks + other.n_picks, self.n_truth + other.n_truth)

    def as_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "n_picks": self.n_picks,
                "n_truth": self.n_truth, "true_positives": self.tp}  # fmt: skip


def match_picks(
    picks: np.ndarray, truth: np.ndarray, side: float, scores: np.ndarray | None = None, iou: float = 0.5
) -> np.ndarray:
    """Which picks are true positives.

    Picks are taken best score first (in the given order without ``scores``); each takes the
    unmatched ground truth of highest IoU when that IoU is at least ``iou``. Each ground
    truth counts once, so a second pick on one particle is a false positive.

    Parameters
    ----------
    picks : (N, 2) pick centres (x, y), pixels
    truth : (M, 2) ground-truth centres, pixels
    side : box side (the particle diameter), pixels

    Returns
    -------
    (N,) bool, True for a true positive
    """
    picks, truth = np.asarray(picks, float).reshape(-1, 2), np.asarray(truth, float).reshape(-1, 2)
    hit = np.zeros(len(picks), bool)
    if not len(picks) or not len(truth):
        return hit
    order = np.argsort(-np.asarray(scores), kind="stable") if scores is not None else np.arange(len(picks))
    tree = cKDTree(truth)
    taken = np.zeros(len(truth), bool)
    near = tree.query_ball_point(picks, side * np.sqrt(2))
    for i in order:
        cand = [j for j in near[i] if not taken[j]]
        if not cand:
            continue
        d = truth[cand] - picks[i]
        v = box_iou(d[:, 0], d[:, 1], side)
        b = int(np.argmax(v))
        if v[b] >= iou:
            taken[cand[b]] = True
            hit[i] = True
    return hit


def count_matches(picks: np.ndarray, truth: np.ndarray, side: float, scores: np.ndarray | None = None) -> MatchCounts:
    """:func:`match_picks` summed into counts."""
    hit = match_picks(picks, truth, side, scores)
    return MatchCounts(int(hit.sum()), len(np.asarray(picks).reshape(-1, 2)), len(np.asarray(truth).reshape(-1, 2)))


def average_precision(picks: np.ndarray, scores: np.ndarray, truth: np.ndarray, side: float) -> float:
    """Area under the precision-recall curve of picks ranked by score (threshold-free quality)."""
    if not len(truth):
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    hit = match_picks(np.asarray(picks)[order], truth, side)
    if not hit.any():
        return 0.0
    prec = np.cumsum(hit) / np.arange(1, len(hit) + 1)
    return float(prec[hit].sum() / len(truth))
