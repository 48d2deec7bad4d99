"""The one registry of few-shot methods, and the interface every method implements.

A method embeds volumes (the learned encoder for ProtoNet, the baselines and FSCC; the
alignment grid for template matching), then turns labelled support embeddings and query
embeddings into, for every query and class, a log-probability (``scores``) and a distance
(``distances``, lower is closer; it drives the ``unknown`` decision). A method whose two
outputs share one expensive computation may also define ``scores_and_distances``.

Adding a method is one new module (the method and a ``build_*(model, **options)``
function) plus one entry in :data:`REGISTRY`; ``evaluate``, ``classify`` and the command
line's ``--method`` choices and help all come from this table. This module imports no
torch, so the command line can read the table cheaply.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cryoshot.errors import CryoshotError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch


class FewShotMethod(Protocol):
    """What ``evaluate`` and ``classify`` need of a method.

    Shapes: ``support`` (S, ...) embeddings with ``support_labels`` (S,) int64 in
    [0, n_classes); ``queries`` (M, ...); outputs (M, n_classes).
    """

    def embed(self, volumes: np.ndarray, voxel_size_A: float, progress: bool = True) -> torch.Tensor:
        """Features of (N, D, D, D) volumes at ``voxel_size_A`` (Å)."""
        ...

    def scores(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        """Log-probabilities of each query for each class."""
        ...

    def distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        """Distances of each query to each class (lower is closer), for ``unknown``."""
        ...


@dataclass(frozen=True)
class MethodSpec:
    """One row of the registry.

    Attributes
    ----------
    name : the ``--method`` value
    summary : one line for the help
    builder : ``"module:function"`` building the method from ``(model, **options)``
    needs_model : whether it runs on a trained model (``--model``)
    trained_by : the ``cryoshot train`` command that makes a suitable model (None: no training)
    """

    name: str
    summary: str
    builder: str
    needs_model: bool = True
    trained_by: str | None = None

    def build(self, model, **options) -> FewShotMethod:
        if self.needs_model and model is None:
            raise CryoshotError(f"method '{self.name}' needs a trained model (--model; made by {self.trained_by})")
        module, func = self.builder.split(":")
        return getattr(importlib.import_module(module), func)(model, **options)


REGISTRY: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("protonet", "ProtoNet3D, squared Euclidean distance d to class means",
                   "cryoshot.fewshot.prototypes:build_protonet", trained_by="cryoshot train protonet"),
        MethodSpec("protonet-ce", "ProtoNet-CE, FEAT set-to-set attention, d + d*",
                   "cryoshot.fewshot.prototypes:build_protonet_ce", trained_by="cryoshot train protonet-ce"),
        MethodSpec("finetune", "the ProtoNet paper's fine-tune baseline (= baseline)",
                   "cryoshot.fewshot.baselines:build_baseline", trained_by="any cryoshot train"),
        MethodSpec("baseline", "Baseline: a linear layer fitted on the support set",
                   "cryoshot.fewshot.baselines:build_baseline", trained_by="cryoshot train finetune"),
        MethodSpec("baseline++", "Baseline++: a cosine classifier fitted on the support set",
                   "cryoshot.fewshot.baselines:build_baseline_pp", trained_by="cryoshot train finetune"),
        MethodSpec("fscc", "FSCC: distribution calibration + logistic regression",
                   "cryoshot.fewshot.fscc:build_fscc", trained_by="cryoshot train fscc"),
        MethodSpec("template", "wedge-constrained template matching (no model)",
                   "cryoshot.fewshot.template:build_template", needs_model=False),
        MethodSpec("cascade", "ProtoNet-CE, with template matching for the ambiguous queries (top-two gap < 0.95)",
                   "cryoshot.fewshot.cascade:build_cascade", trained_by="cryoshot train protonet-ce"),
    )
}  # fmt: skip
METHOD_NAMES = tuple(REGISTRY)


def method_spec(name: str) -> MethodSpec:
    """The registry row of ``name``; a clear error naming the choices otherwise."""
    if name not in REGISTRY:
        raise CryoshotError(f"unknown method '{name}'; choose one of {', '.join(METHOD_NAMES)}")
    return REGISTRY[name]


def methods_help() -> str:
    """``--method`` help text from the registry."""
    return "; ".join(f"{s.name}: {s.summary}" for s in REGISTRY.values())


def make_method(
    name: str,
    model=None,
    distance: str | None = None,
    seed: int = 0,
    tilt_range: tuple[float, float] | None = (-60.0, 60.0),
    rotations: int | None = None,
) -> FewShotMethod:
    """Build a method by name on a trained model (``model`` None for ``template``).

    ``distance`` overrides ProtoNet's distance (d, d*, d+d*); ``seed`` seeds the methods that fit
    a classifier; ``tilt_range`` (degrees, None: no missing wedge) is template matching's wedge;
    ``rotations`` (1, 2 or 4; None: ``models.embedding.EMBED_ROTATIONS``) is how many wedge-preserving
    rotations of each volume the learned methods average their embedding over.
    """
    return method_spec(name).build(model, distance=distance, seed=seed, tilt_range=tilt_range, rotations=rotations)


def scores_and_distances(method: FewShotMethod, support, support_labels, queries, n_classes: int):
    """``(scores, distances)`` of a method, each (M, N), computing shared work once where the method allows."""
    if hasattr(method, "scores_and_distances"):
        return method.scores_and_distances(support, support_labels, queries, n_classes)
    return (method.scores(support, support_labels, queries, n_classes),
            method.distances(support, support_labels, queries, n_classes))  # fmt: skip
