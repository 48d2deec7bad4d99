"""The few-shot method interface shared by ``evaluate`` and ``classify``.

A method embeds volumes (``embed(volumes, voxel_size_A) -> (N, ...)`` features;
the learned encoder for ProtoNet and fine-tune, the alignment grid for template
matching), then turns support features with episode targets and query embeddings into
query scores: ``scores(zs, ts, zq, n_classes) -> (M, N)`` log-probabilities, and
``distances(...) -> (M, N)`` (lower = closer) for open-set ("unknown") decisions.
A method whose two outputs share one expensive computation (template matching)
may also define ``scores_and_distances``. New methods register here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cryoshot.errors import CryoshotError
from cryoshot.fewshot.baselines import BaselineMethod
from cryoshot.models.embedding import embed_volumes
from cryoshot.models.protonet import ProtoNet


@dataclass
class ProtoMethod:
    """ProtoNet3D (``d``) or ProtoNet-CE (``d+d*``, or ``d`` / ``d*`` for ablations)."""

    model: ProtoNet
    distance: str = "d"

    def embed(self, volumes, voxel_size_A: float, progress: bool = True) -> torch.Tensor:
        return embed_volumes(self.model, volumes, voxel_size_A, progress=progress)

    def distances(self, zs: torch.Tensor, ts: torch.Tensor, zq: torch.Tensor, n: int) -> torch.Tensor:
        return self.model.distances(zs, ts, zq, n, self.distance)

    def scores_and_distances(self, zs: torch.Tensor, ts: torch.Tensor, zq: torch.Tensor, n: int):
        d = self.distances(zs, ts, zq, n)
        return torch.log_softmax(-d, dim=1), d

    def scores(self, zs: torch.Tensor, ts: torch.Tensor, zq: torch.Tensor, n: int) -> torch.Tensor:
        return self.scores_and_distances(zs, ts, zq, n)[0]


# The ProtoNet paper's fine-tune baseline (a linear layer on the frozen encoder, Adam on the support set)
# is Chen et al.'s Baseline.
FinetuneMethod = BaselineMethod


def scores_and_distances(method, zs: torch.Tensor, ts: torch.Tensor, zq: torch.Tensor, n: int):
    """``(scores, distances)`` of a method, each (M, N), computing shared work once where the method allows."""
    if hasattr(method, "scores_and_distances"):
        return method.scores_and_distances(zs, ts, zq, n)
    return method.scores(zs, ts, zq, n), method.distances(zs, ts, zq, n)


METHOD_NAMES = ("protonet", "protonet-ce", "finetune", "template", "fscc", "baseline", "baseline++")
NEEDS_MODEL = {name: name != "template" for name in METHOD_NAMES}


def make_method(
    name: str,
    model: ProtoNet | None,
    distance: str | None = None,
    seed: int = 0,
    tilt_range: tuple[float, float] | None = (-60.0, 60.0),
):
    """Build a method by name on a trained model (``distance`` overrides ProtoNet-CE's d+d*).

    ``template`` needs no model (pass None); ``tilt_range`` (degrees, None: no missing wedge) is
    its missing-wedge model and is ignored by the learned methods.
    """
    if name == "template":
        from dataclasses import replace

        from cryoshot.fewshot.template import DEFAULT_TEMPLATE_CONFIG, TemplateMethod

        return TemplateMethod(config=replace(DEFAULT_TEMPLATE_CONFIG, tilt_range_deg=tilt_range))
    if name not in NEEDS_MODEL:
        raise CryoshotError(f"unknown method '{name}'; choose one of {', '.join(METHOD_NAMES)}")
    if model is None:
        raise CryoshotError(f"method '{name}' needs a trained model (--model)")
    if name == "protonet":
        return ProtoMethod(model, distance or "d")
    if name == "protonet-ce":
        if model.adapter is None:
            raise CryoshotError("protonet-ce needs a model with an adaptation head (train protonet-ce)")
        return ProtoMethod(model, distance or "d+d*")
    if name == "finetune":
        return FinetuneMethod(model, seed=seed)
    if name == "baseline":
        return BaselineMethod(model, seed=seed)
    if name == "baseline++":
        return BaselineMethod(model, cosine=True, seed=seed)
    if name == "fscc":
        from cryoshot.fewshot.fscc import FSCCMethod

        return FSCCMethod(model, seed=seed)
    raise CryoshotError(f"unknown method '{name}'; choose one of {', '.join(METHOD_NAMES)}")
