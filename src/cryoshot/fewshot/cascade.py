"""Cascade: the learned ranking for every query, wedge-constrained template matching for the ambiguous ones.

The learned method (ProtoNet-CE's file, distance d + d*) scores every query; a query whose two most
probable classes are closer than ``verify_margin`` (calibrated probability of the first minus that
of the second) is verified by template matching (``cryoshot.fewshot.template``) against the
references of its ``verify_top`` most probable classes, and takes template matching's
probabilities (or, with ``fuse``, their normalised product with the calibrated learned ones).
The others keep the learned ones. Distances (for ``unknown``) are always the learned ones,
so the open-set threshold keeps one scale.

``verify_margin`` 0 verifies nothing (the learned method); above 1 everything. The cost grows with
the share verified; the benchmark (``benchmarks/bench_cascade.py``) prints the whole curve.

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

# Verify when the learned answer is less sure than template matching would be: a calibrated top-two gap
# below 0.95 is a top-1 probability below about 0.975, i.e. a chance of error above about 2.5%, template
# matching's own error rate on the training structures at SNR 0.03 (1.1% 5-shot, 3.2% 1-shot). On the
# training maps at SNR 0.01 (benchmarks/bench_cascade.py --tune --snr 0.01) it keeps 0.996 / 0.989 at
# 6.1x / 6.7x template matching's speed (with DEFAULT_VERIFY_TOP, pooled T 80); docs/benchmarks.md has the curves.
DEFAULT_VERIFY_MARGIN = 0.95
# The shipped model's probabilities, softmax(-d), are far too confident; the gap is read from
# softmax(-d / T). The embedding's scale grows with the SNR (the squared norm of a support embedding, median
# about 1,900 at SNR 0.01 and 4,200 at SNR 0.1 on the validation classes), and the distances with it, so a
# fixed T is over-confident at high SNR. T is therefore kappa_K times the median squared norm of the support
# embeddings, kappa fitted by NLL on the held-out validation classes at SNR 0.02 and 0.01 for each number of
# supports per class K (benchmarks/bench_cascade.py --calibrate: 1-shot 0.0481, 5-shot 0.0247; the fixed
# temperatures it also prints, 99 / 51, were the previous default). Fewer supports, noisier prototypes,
# softer probabilities. In a check on the same classes (other seeds) at SNR 0.05 and 0.1, held out from the
# fit, the scaled temperature gave NLL 0.0227 / 0.0046 (1- / 5-shot) against 0.0269 / 0.0037 for fixed ones.
SHOT_SCALES = ((1, 0.0481), (5, 0.0247))


def calibration_temperature(shots: float, scale: float = 1.0) -> float:
    """T for ``shots`` supports per class: :data:`SHOT_SCALES` interpolated in log K (constant beyond), times
    ``scale`` (the median squared norm of the support embeddings)."""
    (k0, t0), (k1, t1) = SHOT_SCALES
    f = float(np.clip(np.log(max(shots, 1.0) / k0) / np.log(k1 / k0), 0.0, 1.0))
    return float(np.exp((1 - f) * np.log(t0) + f * np.log(t1))) * scale


def embedding_scale(support: torch.Tensor) -> float:
    """The median squared norm of (M, E) support embeddings: the scale the calibration temperature follows."""
    return float((support.double() ** 2).sum(1).median())


# A verified query is matched only against its 2 most probable learned classes (None: every class): on the
# training maps at SNR 0.01 as accurate as matching every class, or more, at half the cost (--tops 0 2).
DEFAULT_VERIFY_TOP: int | None = 2
# A verified query takes template matching's probabilities (False), or their normalised product with the
# calibrated learned ones (True). The product gained on the training maps at SNR 0.01 (1.000 / 0.996 against
# 0.996 / 0.989, 5- / 1-shot; bench_cascade.py --tune --snr 0.01 --fuse 0 1), where the learned method beats
# template matching, and nothing on the novel structures (docs/benchmarks.md), so the simpler rule stays.
DEFAULT_FUSE = False


@dataclass
class CascadeMethod:
    """ProtoNet-CE, with template matching for queries whose top-two probability gap is below ``verify_margin``.

    The gap is that of the calibrated probabilities softmax(log p / T), T = ``temperature`` or, when
    None, :func:`calibration_temperature` of the fewest supports of any class, scaled by the support
    embeddings' :func:`embedding_scale`; the learned
    scores returned for the queries not verified are unchanged. ``verify_top`` k: a verified query is
    matched only against the references of its k most probable learned classes (the others get
    probability 0), at k / n of the alignments; None matches it against every class.
    """

    learned: ProtoMethod
    template: TemplateMethod
    verify_margin: float = DEFAULT_VERIFY_MARGIN
    temperature: float | None = None
    verify_top: int | None = DEFAULT_VERIFY_TOP
    fuse: bool = DEFAULT_FUSE
    progress: bool = False
    last_verified: float = field(default=0.0, init=False)  # share of queries verified by the last call
    _refs: tuple | None = field(default=None, init=False, repr=False)  # (support key, {class: reference})

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

    def _ncc(self, ws: torch.Tensor, support_labels: torch.Tensor, wq: torch.Tensor, candidates: torch.Tensor,
             n_classes: int) -> torch.Tensor:  # fmt: skip
        """Template NCC of queries ``wq`` against their ``candidates`` classes (M, k); -inf for the other classes.

        A class's reference is built the first time a query needs it, once per support set.
        """
        key = (ws.data_ptr(), tuple(ws.shape), support_labels.data_ptr())
        if self._refs is None or self._refs[0] != key:
            self._refs = (key, {})
        refs = self._refs[1]
        ncc = torch.full((len(wq), n_classes), float("-inf"))
        for c in torch.unique(candidates).tolist():
            rows = torch.nonzero((candidates == c).any(1)).flatten()
            if c not in refs:
                refs[c] = self.template.reference(ws, support_labels, c)
            ncc[rows, c] = torch.from_numpy(self.template._aligner.align(wq[rows], refs[c]).scores).float()
        return ncc

    def temperature_for(self, support: torch.Tensor, support_labels: torch.Tensor, n_classes: int) -> float:
        """The calibration temperature for this support set (fixed ``temperature``, else by its fewest supports
        and the scale of its learned embeddings ``support`` (M, E))."""
        if self.temperature is not None:
            return self.temperature
        k = float(torch.bincount(support_labels, minlength=n_classes).min())
        return calibration_temperature(k, embedding_scale(support))

    def scores_and_distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ):
        es, ws = self._split(support)
        eq, wq = self._split(queries)
        logp, dist = self.learned.scores_and_distances(es, support_labels, eq, n_classes)
        t = self.temperature_for(es, support_labels, n_classes)
        top2 = torch.softmax(logp / t, dim=1).topk(min(2, n_classes), dim=1).values
        gap = top2[:, 0] - (top2[:, 1] if n_classes > 1 else 0.0)
        verify = torch.nonzero(gap < self.verify_margin).flatten()
        self.last_verified = float(len(verify)) / max(1, len(queries))
        if len(verify):
            k = n_classes if self.verify_top is None else min(self.verify_top, n_classes)
            ncc = self._ncc(ws, support_labels, wq[verify], logp[verify].topk(k, dim=1).indices, n_classes)
            tm = torch.log_softmax(ncc / self.template.temperature, dim=1)
            if self.fuse:
                tm = torch.log_softmax(tm + torch.log_softmax(logp[verify] / t, dim=1), dim=1)
            logp = logp.clone()
            logp[verify] = tm
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
