"""Prototypical networks (ProtoNet3D) and ProtoNet-CE (ProtoNet-CE paper, Eqs. 1-8).

Distances are squared Euclidean; probabilities are the softmax of negative
distances. ProtoNet-CE adapts prototypes and queries jointly with a set-to-set
attention (FEAT) and, at test, adds the two distances: ``d + d*`` (Eq. 7).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cryoshot.errors import CryoshotError
from cryoshot.models.adaptation import SetAttention
from cryoshot.models.encoders3d import Encoder3d, EncoderConfig

DISTANCES = ("d", "d*", "d+d*")


def prototypes(z_support: torch.Tensor, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class means (Eq. 1). z_support (S, dim), targets (S,) in [0, n_classes) -> (n_classes, dim)."""
    one_hot = torch.nn.functional.one_hot(targets, n_classes).to(z_support.dtype)  # (S, N)
    return (one_hot.T @ z_support) / one_hot.sum(0)[:, None]


def squared_distances(z: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, (M, dim) x (N, dim) -> (M, N)."""
    return torch.cdist(z, protos).pow(2)


class ProtoNet(nn.Module):
    """Encoder plus an optional FEAT adapter.

    Parameters
    ----------
    encoder_config : EncoderConfig
    adapter : build the set-to-set attention (ProtoNet-CE)
    n_base_classes : > 0 adds a linear classifier over the base classes (supervised pre-training,
        ``train finetune`` and ``train fscc``); it is not used at test time
    base_stats_items : > 0 adds FSCC's base-class statistics buffers (items per class)
    """

    def __init__(
        self, encoder_config: EncoderConfig, adapter: bool = True, n_base_classes: int = 0, base_stats_items: int = 0
    ):
        super().__init__()
        self.encoder = Encoder3d(encoder_config)
        self.adapter = SetAttention(self.encoder.dim) if adapter else None
        self.classifier = nn.Linear(self.encoder.dim, n_base_classes) if n_base_classes > 0 else None
        if base_stats_items > 0:  # FSCC: base-class statistics (see fewshot/fscc.py), filled after training
            self.register_buffer("base_mean", torch.zeros(n_base_classes, self.encoder.dim))
            self.register_buffer("base_centred", torch.zeros(n_base_classes, base_stats_items, self.encoder.dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, D, D, D) or (B, D, D, D) -> (B, dim) task-agnostic embeddings f(x)."""
        return self.encoder(x).float()

    def adapt(self, protos: torch.Tensor, z_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Task-specific embeddings (c*, f*(x)) from the set prototypes ∪ queries (Eqs. 4-6)."""
        if self.adapter is None:
            raise CryoshotError("this model has no adaptation head; train it with 'protonet-ce'")
        out = self.adapter(torch.cat([protos, z_query], dim=0))
        return out[: len(protos)], out[len(protos) :]

    def distances(
        self,
        z_support: torch.Tensor,
        targets: torch.Tensor,
        z_query: torch.Tensor,
        n_classes: int,
        distance: str,
    ) -> torch.Tensor:
        """Distances of queries to the prototypes, (M, N), under ``d``, ``d*`` or ``d+d*``."""
        if distance not in DISTANCES:
            raise CryoshotError(f"distance must be one of {DISTANCES}, got '{distance}'")
        protos = prototypes(z_support, targets, n_classes)
        d = squared_distances(z_query, protos) if distance != "d*" else 0.0
        if distance == "d":
            return d
        c_star, q_star = self.adapt(protos, z_query)
        return d + squared_distances(q_star, c_star)
