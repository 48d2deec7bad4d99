"""ProtoNet3D and ProtoNet-CE as few-shot methods: distances to (adapted) class prototypes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cryoshot.errors import CryoshotError
from cryoshot.models.embedding import embed_volumes
from cryoshot.models.protonet import ProtoNet


@dataclass
class ProtoMethod:
    """ProtoNet3D (``d``) or ProtoNet-CE (``d+d*``, or ``d`` / ``d*`` for ablations)."""

    model: ProtoNet
    distance: str = "d"
    rotations: int | None = None  # wedge-preserving rotations averaged in the embedding (None: the default)

    def embed(self, volumes, voxel_size_A: float, progress: bool = True) -> torch.Tensor:
        return embed_volumes(self.model, volumes, voxel_size_A, progress=progress, rotations=self.rotations)

    def distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return self.model.distances(support, support_labels, queries, n_classes, self.distance)

    def scores_and_distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ):
        d = self.distances(support, support_labels, queries, n_classes)
        return torch.log_softmax(-d, dim=1), d

    def scores(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return self.scores_and_distances(support, support_labels, queries, n_classes)[0]


def build_protonet(model: ProtoNet, distance: str | None = None, rotations: int | None = None, **_) -> ProtoMethod:
    """ProtoNet3D: squared Euclidean distance ``d`` to class means (``distance`` overrides)."""
    return ProtoMethod(model, distance or "d", rotations)


def build_protonet_ce(model: ProtoNet, distance: str | None = None, rotations: int | None = None, **_) -> ProtoMethod:
    """ProtoNet-CE: FEAT-adapted prototypes, ``d + d*`` (``distance`` overrides, for the ablation)."""
    if model.adapter is None:
        raise CryoshotError("protonet-ce needs a model with an adaptation head (train protonet-ce)")
    return ProtoMethod(model, distance or "d+d*", rotations)
