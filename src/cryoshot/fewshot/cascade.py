"""Cascade: the learned ranking for every query, wedge-constrained template matching for the ambiguous ones.

ProtoNet-CE scores every query; a query whose two most probable classes are closer than
``verify_margin`` (probability of the first minus that of the second) is verified by
template matching against the support references (``cryoshot.fewshot.template``), and
takes template matching's class probabilities. The others keep the learned ones. Distances
(for ``unknown``) are always the learned ones, so the open-set threshold keeps one scale.

``verify_margin`` 0 verifies nothing (ProtoNet-CE); 1 verifies everything (template
matching's answers at more than its cost). The cost grows with the share verified; the
benchmark (``benchmarks/bench_cascade.py``) prints the whole curve.

The method's "features" are the learned embedding and the particle on the alignment's
working grid side by side, (N, E + d³), so the one method interface (embed, then score
support against queries) and every caller (``classify``, episodes, work units) take it as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cryoshot.fewshot.prototypes import ProtoMethod, build_protonet_ce
from cryoshot.fewshot.template import TemplateMethod, build_template

# Chosen on the 8 training structures (benchmarks/bench_cascade.py --tune), never on the novel ones.
DEFAULT_VERIFY_MARGIN = 0.5
# The shipped model's probabilities, softmax(-d), are far too confident; the gap is read from
# softmax(-d / T) with T fitted by NLL on the held-out validation classes at SNR 0.02 and 0.01
# (benchmarks/bench_cascade.py --calibrate: NLL 1.23 -> 0.03, calibration error 0.010 -> 0.001).
DEFAULT_TEMPERATURE = 80.0


@dataclass
class CascadeMethod:
    """ProtoNet-CE, with template matching for queries whose top-two probability gap is below ``verify_margin``.

    The gap is that of the calibrated probabilities softmax(log p / ``temperature``); the learned
    scores returned for the queries not verified are unchanged.
    """

    learned: ProtoMethod
    template: TemplateMethod
    verify_margin: float = DEFAULT_VERIFY_MARGIN
    temperature: float = DEFAULT_TEMPERATURE
    progress: bool = False
    last_verified: float = field(default=0.0, init=False)  # share of queries verified by the last call
    _refs: tuple | None = field(default=None, init=False, repr=False)

    @property
    def dim(self) -> int:
        return self.learned.model.encoder.dim

    def embed(self, volumes: np.ndarray, voxel_size_A: float, progress: bool = True) -> torch.Tensor:
        """(N, E + d³): the learned embedding, then the particle on the template's working grid."""
        z = self.learned.embed(volumes, voxel_size_A, progress=progress)
        w = self.template.embed(volumes, voxel_size_A, progress=progress)
        return torch.cat([z, w.reshape(len(w), -1)], dim=1)

    def _split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = round((z.shape[1] - self.dim) ** (1 / 3))
        return z[:, : self.dim], z[:, self.dim :].reshape(len(z), d, d, d)

    def _ncc(self, ws: torch.Tensor, support_labels: torch.Tensor, wq: torch.Tensor, n_classes: int) -> torch.Tensor:
        """Template NCC of queries ``wq`` against the references of this support (built once per support set)."""
        key = (ws.data_ptr(), tuple(ws.shape), support_labels.data_ptr(), n_classes)
        if self._refs is None or self._refs[0] != key:
            self._refs = (key, self.template.references(ws, support_labels, n_classes))
        al = self.template._aligner
        return torch.stack([torch.from_numpy(al.align(wq, ref).scores).float() for ref in self._refs[1]], 1)

    def scores_and_distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ):
        es, ws = self._split(support)
        eq, wq = self._split(queries)
        logp, dist = self.learned.scores_and_distances(es, support_labels, eq, n_classes)
        top2 = torch.softmax(logp / self.temperature, dim=1).topk(min(2, n_classes), dim=1).values
        gap = top2[:, 0] - (top2[:, 1] if n_classes > 1 else 0.0)
        verify = torch.nonzero(gap < self.verify_margin).flatten()
        self.last_verified = float(len(verify)) / max(1, len(queries))
        if len(verify):
            ncc = self._ncc(ws, support_labels, wq[verify], n_classes)
            logp = logp.clone()
            logp[verify] = torch.log_softmax(ncc / self.template.temperature, dim=1)
        return logp, dist

    def scores(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return self.scores_and_distances(support, support_labels, queries, n_classes)[0]

    def distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        es, _ = self._split(support)
        eq, _ = self._split(queries)
        return self.learned.distances(es, support_labels, eq, n_classes)


def build_cascade(
    model,
    tilt_range: tuple[float, float] | None = (-60.0, 60.0),
    verify_margin: float | None = None,
    rotations: int | None = None,
    **_,
) -> CascadeMethod:
    """ProtoNet-CE on ``model`` + template matching with the particles' ``tilt_range`` wedge."""
    return CascadeMethod(build_protonet_ce(model, rotations=rotations), build_template(tilt_range=tilt_range),
                         DEFAULT_VERIFY_MARGIN if verify_margin is None else verify_margin)  # fmt: skip
