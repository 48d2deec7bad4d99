"""The self-cross similarity loss of cryoMAE (Xu et al. 2024, §3.2.2–3.2.3, Eqs. 1–6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity_sums(fl: torch.Tensor, fu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sums of cosine similarities S_ll, S_lu, S_uu (diagonals included).

    Parameters
    ----------
    fl : (m, d) exemplar features
    fu : (n, d) unlabelled-region features
    """
    zl, zu = F.normalize(fl, dim=1), F.normalize(fu, dim=1)
    sl, su = zl.sum(0), zu.sum(0)
    # sum_ij cos(a_i, b_j) = (sum_i a_i) . (sum_j b_j) for unit vectors: O((m + n) d)
    return sl @ sl, sl @ su, su @ su


def self_cross_similarity(fl: torch.Tensor, fu: torch.Tensor, pi: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Self and cross similarity, PU-adjusted for a fraction ``pi`` of unlabelled regions holding a particle.

    With ``pi = 0`` these are Eqs. 1–2: the mean cosine similarity among exemplars, and
    between exemplars and unlabelled regions. With ``pi > 0`` (Eqs. 4–5) every unlabelled
    region counts as a positive with weight ``pi`` and as a negative with weight ``1 - pi``::

        S_self  = (S_ll + 2 pi S_lu + pi^2 S_uu) / (m + pi n)^2
        S_cross = ((1 - pi) S_lu + pi (1 - pi) S_uu) / ((m + pi n) (1 - pi) n)

    The numerators are the paper's; the denominators are the sums of the weights, so that
    both stay weighted means of cosines and ``pi = 0`` gives Eqs. 1–2 exactly (the printed
    denominators, (m + n)^2 and (m + n) n, do not).

    Returns
    -------
    s_self, s_cross : scalar tensors in [-1, 1]
    """
    if not 0.0 <= pi < 1.0:
        raise ValueError(f"pi must be in [0, 1), got {pi}")
    m, n = fl.shape[0], fu.shape[0]
    s_ll, s_lu, s_uu = similarity_sums(fl, fu)
    w_pos = m + pi * n
    s_self = (s_ll + 2 * pi * s_lu + pi**2 * s_uu) / w_pos**2
    s_cross = ((1 - pi) * s_lu + pi * (1 - pi) * s_uu) / (w_pos * (1 - pi) * n)
    return s_self, s_cross


def scs_loss(fl: torch.Tensor, fu: torch.Tensor, alpha: float = 0.5, tau: float = 0.0, pi: float = 0.0) -> torch.Tensor:
    """Eq. 3 (Eq. 5's adjusted similarities when ``pi > 0``): ``max(tau, 1 + alpha S_cross - (1 - alpha) S_self)``."""
    s_self, s_cross = self_cross_similarity(fl, fu, pi)
    return torch.clamp(1 + alpha * s_cross - (1 - alpha) * s_self, min=tau)
