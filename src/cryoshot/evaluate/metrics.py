"""Episode metrics: accuracy with a 95% confidence interval, macro precision, per-class accuracy, AUROC."""

from __future__ import annotations

import numpy as np


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the normal-approximation 95% CI (1.96 standard errors)."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(1.96 * v.std(ddof=1) / np.sqrt(len(v)))


def macro_precision(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Precision averaged over classes (a class never predicted counts 0)."""
    precs = []
    for c in range(n_classes):
        pred_c = y_pred == c
        precs.append(float((y_true[pred_c] == c).mean()) if pred_c.any() else 0.0)
    return float(np.mean(precs))


def auroc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """Area under the ROC curve for 'positive scores are higher' (Mann-Whitney, ties count half)."""
    from scipy.stats import rankdata

    s = np.concatenate([scores_pos, scores_neg])
    r = rankdata(s)
    n_pos, n_neg = len(scores_pos), len(scores_neg)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((r[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
