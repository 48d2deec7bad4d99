"""Few-shot classification of 2D particle images with the Siamese embedding (``cryoshot classify`` on stacks).

Prototypes are the means of the support embeddings of each class (unit vectors, so the
squared Euclidean distance is 2 - 2 cos); probabilities are a softmax over ``-d / TEMPERATURE``.
``TEMPERATURE`` = 0.1 is a fixed choice (not calibrated): on unit vectors d spans [0, 4],
and a softmax over -d itself would leave every probability near 1/N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TEMPERATURE = 0.1


@dataclass
class SiamesePrototypes:
    """Nearest prototype in a Siamese embedding; the ``FewShotMethod`` interface on embeddings."""

    temperature: float = TEMPERATURE

    def distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        protos = torch.zeros(n_classes, support.shape[1], dtype=support.dtype).index_add_(0, support_labels, support)
        protos = protos / torch.bincount(support_labels, minlength=n_classes).clamp_min(1)[:, None].to(support.dtype)
        return torch.cdist(queries, protos).pow(2)

    def scores_and_distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ):
        d = self.distances(support, support_labels, queries, n_classes)
        return torch.log_softmax(-d / self.temperature, dim=1), d

    def scores(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return self.scores_and_distances(support, support_labels, queries, n_classes)[0]
