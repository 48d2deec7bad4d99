"""Template-matching baseline: constrained cross-correlation against support references.

Per episode, the K supports of each class are aligned to their first member and
averaged with missing-wedge compensation into a reference (with K = 1 the
support itself, with its own wedge). Each query gets the class whose reference
it matches best over the rotation (and shift) search. No training.

Scores are ``log_softmax(ncc / temperature)``; distances are ``1 - ncc``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoshot.align.average import wedge_average
from cryoshot.align.search import AlignConfig, Aligner

# Chosen on the 8 bundled *training* structures (benchmarks/bench_template.py --tune), never on the novel ones.
# 30° grid + one local refinement (15° offsets) at 40 Å: as accurate as a 20° grid, at the cost of a 30° one.
DEFAULT_TEMPLATE_CONFIG = AlignConfig(angular_step_deg=30.0, refine_levels=1, n_candidates=2, lowpass_A=40.0)


@dataclass
class TemplateMethod:
    """Template matching with wedge-constrained NCC (see module docstring)."""

    config: AlignConfig = field(default_factory=lambda: AlignConfig(**vars(DEFAULT_TEMPLATE_CONFIG)))
    temperature: float = 0.02
    wiener: float = 0.1
    progress: bool = False  # a progress bar over query chunks (classify sets it; episodes keep it off)
    _aligner: Aligner | None = None

    def embed(self, volumes: np.ndarray, voxel_size_A: float, progress: bool = True) -> torch.Tensor:
        """Particles on the alignment's working grid, (N, d, d, d) float32 (the method's 'features')."""
        box = volumes.shape[-1]
        al = self._aligner
        if al is None or al.box != box or abs(al.pixel_size_A - voxel_size_A) > 1e-6:
            self._aligner = al = Aligner(box, voxel_size_A, self.config)
        return torch.cat([al.to_work(volumes[s : s + 256]) for s in range(0, len(volumes), 256)])

    def references(self, support: torch.Tensor, support_labels: torch.Tensor, n_classes: int):
        """One Fourier reference per class from its supports (aligned to the first, wedge-averaged)."""
        return [self.reference(support, support_labels, c) for c in range(n_classes)]

    def reference(self, support: torch.Tensor, support_labels: torch.Tensor, c: int):
        """Class ``c``'s Fourier reference: its supports aligned to the first and wedge-averaged (K = 1: itself)."""
        al = self._aligner
        assert al is not None, "call embed() first"
        sup = support[support_labels == c]
        first = al.reference(sup[0], al.wedge_half)
        if len(sup) == 1:
            return first
        r = al.align(sup[1:], first)
        mats = torch.cat([torch.eye(3)[None], torch.from_numpy(r.matrices).float()])
        shifts = torch.cat([torch.zeros(1, 3), torch.from_numpy(r.shifts_A / al.work_pixel_A).float()])
        avg, weight = wedge_average(sup, mats, shifts, al.wedge_half, self.wiener)
        return al.reference(avg, weight.clamp(max=1.0))

    def ncc(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        """Best constrained NCC of each query against each class reference, (M, N)."""
        al = self._aligner
        refs = self.references(support, support_labels, n_classes)
        bar = tqdm(total=len(queries), desc="template matching", unit="subtomo", disable=not self.progress)
        rows = []
        for s in range(0, len(queries), 128):
            q = queries[s : s + 128]
            rows.append(torch.stack([torch.from_numpy(al.align(q, ref).scores).float() for ref in refs], 1))
            bar.update(len(q))
        bar.close()
        return torch.cat(rows) if rows else torch.zeros(0, n_classes)

    def scores_and_distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ):
        """Both outputs from one rotation search."""
        ncc = self.ncc(support, support_labels, queries, n_classes)
        return torch.log_softmax(ncc / self.temperature, dim=1), 1.0 - ncc

    def scores(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return self.scores_and_distances(support, support_labels, queries, n_classes)[0]

    def distances(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return self.scores_and_distances(support, support_labels, queries, n_classes)[1]


def build_template(model: None = None, tilt_range: tuple[float, float] | None = (-60.0, 60.0), **_) -> TemplateMethod:
    """Template matching (no model): ``tilt_range`` (degrees, None: no wedge) is the particles' missing wedge."""
    from dataclasses import replace

    return TemplateMethod(config=replace(DEFAULT_TEMPLATE_CONFIG, tilt_range_deg=tilt_range))
