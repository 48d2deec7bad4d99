"""Simulated 2D particle images grouped into orientation classes (for 2D classification).

Each structure is seen from ``n_views`` fixed orientations ("views"); every image
of a view is that orientation perturbed by a small random rotation
(``view_jitter_deg``), optionally rotated in plane, shifted, filtered by its own
CTF, and given noise at the requested SNR (whole-image variance,
``SNR = var(CTF-filtered projection) / var(noise)``): white, or partly structural (imaged
through the same CTF, ``structural_noise``); a detector MTF (``mtf_nyquist``) then blurs
signal and noise alike. The class of an image is
``structure * n_views + view``. Image ``i`` is a pure function of ``(seed, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from cryoshot.errors import CryoshotError
from cryoshot.simulate.noise import box_noise_scale, check_detector, check_snr, mix_structural
from cryoshot.simulate.optics import Microscope, check_imaging, ctf_2d, detector_mtf_2d
from cryoshot.simulate.projector import FourierProjector
from cryoshot.simulate.structures import Structure
from cryoshot.utils.seeding import item_rng

_VIEW_STREAM = 3
_IMG_STREAM = 4


@dataclass
class ProjectionConfig:
    """Settings of a projection-image simulation (units in the names)."""

    box_px: int = 64
    pixel_size_A: float = 5.0
    n_views: int = 4
    snr: float = 0.1
    view_jitter_deg: float = 5.0
    inplane_rotation: bool = False
    max_shift_px: float = 1.0
    defocus_min_um: float = 1.0
    defocus_max_um: float = 3.0
    microscope: Microscope = field(default_factory=Microscope)
    structural_noise: float = 0.0  # share of the noise variance imaged through the CTF (ice, solvent)
    mtf_nyquist: float = 1.0  # the detector's MTF at Nyquist (1: perfect), applied to the whole image
    invert: bool = False
    seed: int = 0

    def validate(self) -> None:
        check_snr(self.snr)
        check_detector(self.structural_noise, self.mtf_nyquist)
        self.microscope.validate()
        check_imaging(self.defocus_min_um, self.defocus_max_um, self.microscope.amplitude_contrast)
        if self.n_views < 1:
            raise CryoshotError("need at least one view per structure")


@dataclass
class ProjectionBatch:
    """Images (B, D, D) float32, clean versions, class labels, structure index, matrices, defocus (µm)."""

    images: np.ndarray
    clean: np.ndarray
    labels: np.ndarray
    structure: np.ndarray
    matrices: np.ndarray
    defocus_um: np.ndarray


class ProjectionSimulator:
    """Simulate projection images of ``structures`` in ``n_views`` orientation classes each."""

    def __init__(self, structures: list[Structure], config: ProjectionConfig):
        config.validate()
        if not structures:
            raise CryoshotError("no structures to simulate: give at least one")
        self.structures = structures
        self.config = config
        self.projector = FourierProjector(np.stack([s.density for s in structures]))
        rng = item_rng(config.seed, 0, stream=_VIEW_STREAM)
        self.views = Rotation.random(len(structures) * config.n_views, random_state=rng)

    @property
    def n_classes(self) -> int:
        return len(self.structures) * self.config.n_views

    def simulate(self, indices) -> ProjectionBatch:
        c = self.config
        idx = np.asarray(list(indices), dtype=np.int64)
        labels = idx % self.n_classes
        mats, dfs, shifts, noises, structurals = [], [], [], [], []
        for i, lab in zip(idx, labels, strict=True):
            rng = item_rng(c.seed, int(i), stream=_IMG_STREAM)
            jitter = Rotation.from_rotvec(
                rng.normal(size=3) / np.sqrt(3) * np.deg2rad(c.view_jitter_deg) * rng.uniform()
            )
            rot = jitter * self.views[int(lab)]
            if c.inplane_rotation:
                rot = Rotation.from_euler("z", rng.uniform(0, 360), degrees=True) * rot
            mats.append(rot.as_matrix())
            dfs.append(rng.uniform(c.defocus_min_um, c.defocus_max_um))
            shifts.append(rng.uniform(-c.max_shift_px, c.max_shift_px, size=2))
            noises.append(rng.standard_normal((c.box_px, c.box_px), dtype=np.float32))
            if c.structural_noise > 0:  # drawn only then, so the default's images stay as they were
                structurals.append(rng.standard_normal((c.box_px, c.box_px), dtype=np.float32))
        mats = np.stack(mats)
        structure = labels // c.n_views
        proj = torch.from_numpy(self.projector.project(structure, mats))
        d = c.box_px
        ky = torch.fft.fftfreq(d)[:, None]
        kx = torch.fft.rfftfreq(d)[None, :]
        sh = torch.from_numpy(np.stack(shifts).astype(np.float32))
        phase = torch.exp(-2j * np.pi * (kx[None] * sh[:, 0, None, None] + ky[None] * sh[:, 1, None, None]))
        ctfs = torch.from_numpy(np.stack([ctf_2d(d, c.pixel_size_A, df, c.microscope) for df in dfs]))
        clean = torch.fft.irfft2(torch.fft.rfft2(proj) * phase * ctfs, s=(d, d))
        noise = torch.from_numpy(np.stack(noises))
        if c.structural_noise > 0:
            structural = torch.fft.irfft2(torch.fft.rfft2(torch.from_numpy(np.stack(structurals))) * ctfs, s=(d, d))
            noise = mix_structural(noise, structural, c.structural_noise)
        images = clean + noise * box_noise_scale(clean, noise, c.snr)[:, None, None]
        if c.mtf_nyquist < 1:  # the detector blurs everything it records
            mtf = torch.from_numpy(detector_mtf_2d((d, d), c.mtf_nyquist))
            images = torch.fft.irfft2(torch.fft.rfft2(images) * mtf, s=(d, d))
            clean = torch.fft.irfft2(torch.fft.rfft2(clean) * mtf, s=(d, d))
        sign = -1.0 if c.invert else 1.0
        return ProjectionBatch(
            images=(sign * images).numpy().astype(np.float32),
            clean=(sign * clean).numpy().astype(np.float32),
            labels=labels,
            structure=structure,
            matrices=mats,
            defocus_um=np.asarray(dfs),
        )
