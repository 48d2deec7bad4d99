"""FSCC (Gao et al. 2022): supervised contrastive pre-training and distribution calibration.

Pre-training loss (Eqs. 1-3): ``L = L_CE + λ L_SCL`` with the supervised
contrastive loss of Khosla et al. 2020 at temperature τ. As in Khosla et al. the
features are L2-normalised inside ``L_SCL`` (the paper's Eq. 3 writes raw dot
products; with τ = 0.07 unnormalised features overflow).

Re-training (Section 2.3, Algorithm 1), with the encoder frozen:

1. base statistics: mean and covariance of each base class's features (Eqs. 4-5);
2. Tukey's ladder of powers on novel features, ``ṽ = v^λ`` (λ = 0.5; Eq. 6).
   Features are ReLU + pooling outputs, so non-negative; they are clamped at 0
   anyway, so a negative value from another encoder cannot give NaN;
3. the k base classes whose means are nearest to ṽ (Eqs. 7-8);
4. ``μ' = (Σ_S μ_i + ṽ) / (k + 1)``, ``Σ' = Σ_S Σ_i / k`` (Eqs. 9-10); features
   are sampled from N(μ', Σ' + ridge·I) for every support example, and a
   logistic regression is trained on the supports plus the samples.

Covariances are kept in factored form: the centred base features ``X_i`` of each
class, ``Σ_i = X_i^T X_i / (n_i - 1)``. That stores (n_i × dim) numbers per class
instead of dim², and sampling ``μ' + Y^T ε₁ + sqrt(ridge) ε₂`` (``Y`` stacking the
scaled ``X_i`` of the k classes) is exactly N(μ', Σ' + ridge·I) with no Cholesky
factorisation, so a degenerate class cannot break it. The ridge (default 1e-3
times the mean feature variance) regularises single-example or identical
supports.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from cryoshot.errors import CryoshotError


def supcon_loss(z: torch.Tensor, y: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Eq. 3), averaged over anchors with at least one positive.

    z (N, dim) features, y (N,) labels.
    """
    z = torch.nn.functional.normalize(z.float(), dim=1)
    sim = z @ z.T / temperature
    n = len(z)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~eye
    n_pos = pos.sum(1)
    keep = n_pos > 0
    if not keep.any():
        return z.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1)[keep] / n_pos[keep]
    return per_anchor.mean()


def tukey(v: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """Tukey's ladder of powers (Eq. 6) on features clamped at 0: v^λ, or log v for λ = 0."""
    v = v.clamp_min(0.0)
    return torch.log(v + 1e-6) if lam == 0 else v.pow(lam)


@dataclass
class BaseStatistics:
    """Per-base-class feature statistics in factored form.

    Attributes
    ----------
    means : (B, dim) class means μ_i (Eq. 4)
    centred : (B, n, dim) centred features X_i, with Σ_i = X_i^T X_i / (n - 1) (Eq. 5)
    """

    means: torch.Tensor
    centred: torch.Tensor

    @staticmethod
    def from_features(features: torch.Tensor) -> BaseStatistics:
        """features (B, n, dim) of n items per base class."""
        if features.shape[1] < 2:
            raise CryoshotError("base statistics need at least 2 items per base class")
        mu = features.float().mean(1)
        return BaseStatistics(mu, features.float() - mu[:, None])

    def covariance(self, i: int) -> torch.Tensor:
        x = self.centred[i]
        return x.T @ x / (len(x) - 1)


def calibrate(
    v: torch.Tensor, stats: BaseStatistics, k: int = 2, lam: float = 0.5
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Calibrated mean of one novel example (Eqs. 6-9) and its k nearest base classes.

    Returns (μ' (dim,), selected base indices (k,), transformed ṽ (dim,)).
    """
    n_base = len(stats.means)
    if not 1 <= k <= n_base:
        raise CryoshotError(f"k = {k} nearest base classes requested, but the model has {n_base} base classes")
    vt = tukey(v, lam)
    dist = torch.linalg.vector_norm(stats.means - vt, dim=1)
    sel = torch.topk(dist, k, largest=False).indices
    mu = (stats.means[sel].sum(0) + vt) / (k + 1)
    return mu, sel.numpy(), vt


def sample_calibrated(
    mu: torch.Tensor, stats: BaseStatistics, sel: np.ndarray, n: int, ridge: float, g: torch.Generator
) -> torch.Tensor:
    """n samples of N(μ', Σ' + ridge I) with Σ' = mean of the selected Σ_i (Eq. 10); (n, dim)."""
    x = stats.centred[torch.as_tensor(sel)]  # (k, m, dim)
    k, m, dim = x.shape
    y = x.reshape(k * m, dim) / np.sqrt(k * (m - 1))  # Y^T Y = Σ_S Σ_i / k
    e1 = torch.randn(n, k * m, generator=g)
    e2 = torch.randn(n, dim, generator=g)
    return mu + e1 @ y + np.sqrt(ridge) * e2


@dataclass
class FSCCMethod:
    """Distribution calibration + logistic regression on a frozen encoder with base statistics."""

    model: torch.nn.Module
    k: int = 2
    lam: float = 0.5
    n_samples: int = 500
    ridge_fraction: float = 1e-3
    calibrate: bool = True
    seed: int = 0
    rotations: int | None = None  # wedge-preserving rotations averaged in the embedding (None: the default)

    def __post_init__(self):
        self.stats = base_statistics(self.model)

    def embed(self, volumes, voxel_size_A: float, progress: bool = True) -> torch.Tensor:
        from cryoshot.models.embedding import embed_volumes

        return embed_volumes(self.model, volumes, voxel_size_A, progress=progress, rotations=self.rotations)

    def _fit(self, support: torch.Tensor, support_labels: torch.Tensor, n_classes: int):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        g = torch.Generator().manual_seed(self.seed)
        xs, ys = [tukey(support, self.lam)], [support_labels.numpy()]
        if self.calibrate:
            ridge = self.ridge_fraction * float(self.stats.centred.var(dim=1).mean())
            per = max(1, self.n_samples // max(1, len(support) // n_classes))
            for v, t in zip(support, support_labels.numpy(), strict=True):
                mu, sel, _ = calibrate(v, self.stats, self.k, self.lam)
                xs.append(sample_calibrated(mu, self.stats, sel, per, ridge, g))
                ys.append(np.full(per, t))
        x = torch.cat(xs).numpy()
        clf = LogisticRegression(max_iter=1000)
        with warnings.catch_warnings():
            # well-separated sampled features make lbfgs creep towards large weights; the fit is usable anyway
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, np.concatenate(ys))
        return clf

    def scores(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        if len(torch.unique(support_labels)) < 2:
            raise CryoshotError("FSCC's classifier needs at least two support classes")
        clf = self._fit(support, support_labels, n_classes)
        p = np.zeros((len(queries), n_classes))
        p[:, clf.classes_] = clf.predict_proba(tukey(queries, self.lam).numpy())
        return torch.log(torch.as_tensor(p, dtype=torch.float32).clamp_min(1e-12))

    def distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        """Squared distance to the calibrated class means (ṽ space), for open-set decisions."""
        means = []
        for c in range(n_classes):
            mus = [calibrate(v, self.stats, self.k, self.lam)[0] for v in support[support_labels == c]]
            means.append(torch.stack(mus).mean(0))
        return torch.cdist(tukey(queries, self.lam), torch.stack(means)).pow(2)


def base_statistics(model: torch.nn.Module) -> BaseStatistics:
    """The base statistics stored in a model's buffers; a clear error when they are missing."""
    mean = getattr(model, "base_mean", None)
    centred = getattr(model, "base_centred", None)
    if mean is None or centred is None:
        raise CryoshotError(
            "this checkpoint has no base-class statistics; FSCC needs a model made by 'cryoshot train fscc'"
        )
    if not bool(centred.abs().sum() > 0):
        if bool(mean.abs().sum() > 0):
            raise CryoshotError("this checkpoint's base-class statistics are empty; retrain with 'cryoshot train fscc'")
        raise CryoshotError(
            "this checkpoint has no base-class statistics, or its encoder collapsed (all features zero, e.g. "
            "after too high a learning rate); FSCC needs a model made by 'cryoshot train fscc'"
        )
    return BaseStatistics(mean.float(), centred.float())


def build_fscc(model: torch.nn.Module, seed: int = 0, rotations: int | None = None, **_) -> FSCCMethod:
    """FSCC: distribution calibration from the model's stored base statistics, then logistic regression."""
    return FSCCMethod(model, seed=seed, rotations=rotations)
