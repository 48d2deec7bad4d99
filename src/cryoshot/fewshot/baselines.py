"""Baseline and Baseline++ (Chen et al. 2019, as FSCC runs them): a classifier fine-tuned on the support set.

Both sit on a frozen pre-trained encoder. Baseline trains a linear layer;
Baseline++ a cosine-similarity classifier ``s · cos(w_c, z)`` with scale ``s``
(Chen et al.: 2 for small embeddings, up to 10; default 10). Adam, 100 steps on
the support set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cryoshot.models.embedding import embed_volumes


@dataclass
class BaselineMethod:
    """Linear (``cosine=False``) or cosine (``cosine=True``, Baseline++) classifier on frozen features."""

    model: torch.nn.Module
    cosine: bool = False
    scale: float = 10.0
    steps: int = 100
    lr: float = 1e-2
    seed: int = 0
    rotations: int | None = None  # wedge-preserving rotations averaged in the embedding (None: the default)

    def embed(self, volumes, voxel_size_A: float, progress: bool = True) -> torch.Tensor:
        return embed_volumes(self.model, volumes, voxel_size_A, progress=progress, rotations=self.rotations)

    def _logits(self, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.cosine:
            return self.scale * torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(w, dim=1).T
        return x @ w.T + b

    def scores(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        mu, sd = support.mean(0, keepdim=True), support.std(0, keepdim=True).nan_to_num(1.0) + 1e-6
        x = (support - mu) / sd
        w = (torch.randn(n_classes, support.shape[1], generator=g) * 0.01).requires_grad_(True)
        b = torch.zeros(n_classes, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=self.lr)
        # separable supports drive the gradients into denormal floats, which are ~40x slower on CPUs;
        # flushing them to zero changes nothing a float32 classifier can resolve
        # (torch has no getter for the mode: it is switched back to torch's default, off, afterwards)
        torch.set_flush_denormal(True)
        try:
            with torch.enable_grad():
                for _ in range(self.steps):
                    loss = torch.nn.functional.cross_entropy(self._logits(w, b, x), support_labels)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        finally:
            torch.set_flush_denormal(False)
        with torch.no_grad():
            return torch.log_softmax(self._logits(w, b, (queries - mu) / sd), dim=1)

    def distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return -self.scores(support, support_labels, queries, n_classes)


def build_baseline(model: torch.nn.Module, seed: int = 0, rotations: int | None = None, **_) -> BaselineMethod:
    """Baseline: a linear layer on the frozen encoder, Adam on the support set."""
    return BaselineMethod(model, seed=seed, rotations=rotations)


def build_baseline_pp(model: torch.nn.Module, seed: int = 0, rotations: int | None = None, **_) -> BaselineMethod:
    """Baseline++: a cosine classifier (scale 10) on the frozen encoder."""
    return BaselineMethod(model, cosine=True, seed=seed, rotations=rotations)
