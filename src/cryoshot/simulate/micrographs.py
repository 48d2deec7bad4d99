"""Simulated micrographs with ground-truth particle coordinates.

Particles (Fourier-slice projections of randomly rotated structures) are placed
at random, non-overlapping positions. The image then gets one CTF (applied to the
whole field, so delocalisation crosses particle boundaries), optional contaminants
(ice blobs, a carbon edge), a slowly varying ice-thickness background, and noise
whose variance gives the requested SNR, measured over the particle pixels:
``SNR = var(CTF-filtered particle signal inside the particle discs) / var(noise)``.
The noise is white, or partly structural (``structural_noise``: imaged through the same
CTF, as the ice and solvent are); amorphous ice's texture (``ice_texture``), a phase field
with a power-law spectrum imaged through the CTF, can be added on top of the noise; a detector
MTF (``mtf_nyquist``) then blurs the whole recorded image, signal and noise alike (the SNR is
the one before the detector, without the texture).

Micrograph ``m`` is a pure function of ``(seed, m)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from scipy.special import expit

from cryoshot.errors import CryoshotError
from cryoshot.simulate.noise import check_detector, check_snr, mix_structural, power_law_field
from cryoshot.simulate.optics import Microscope, check_imaging, ctf, detector_mtf_2d
from cryoshot.simulate.projector import FourierProjector
from cryoshot.simulate.structures import Structure
from cryoshot.utils.seeding import item_rng

_MIC_STREAM = 2


@dataclass
class MicrographConfig:
    """Settings of a micrograph simulation (units in the names)."""

    size_px: int = 1024
    pixel_size_A: float = 5.0
    particle_box_px: int = 64
    n_particles: int = 100
    min_distance_px: float | None = None
    snr: float = 0.1
    defocus_min_um: float = 1.0
    defocus_max_um: float = 3.0
    microscope: Microscope = field(default_factory=Microscope)
    ice_gradient: float = 0.5
    ice_gradient_scale_px: float | None = None  # how far it varies; None: a third of the micrograph
    n_ice_blobs: int = 0
    carbon_edge: bool = False
    structural_noise: float = 0.0  # share of the noise variance imaged through the CTF (ice, solvent)
    mtf_nyquist: float = 1.0  # the detector's MTF at Nyquist (1: perfect), applied to the whole image
    ice_texture: float = 0.0  # sd of amorphous ice's phase texture after the CTF, in units of the noise sd
    ice_texture_exponent: float = 1.0  # its amplitude spectrum ~ 1/k^exponent (flat beyond 4 particle diameters)
    invert: bool = False
    seed: int = 0

    def validate(self) -> None:
        check_snr(self.snr)
        check_detector(self.structural_noise, self.mtf_nyquist)
        self.microscope.validate()
        check_imaging(self.defocus_min_um, self.defocus_max_um, self.microscope.amplitude_contrast)
        if self.particle_box_px < 8:
            raise CryoshotError(f"particle box must be at least 8 pixels, got {self.particle_box_px}")
        if self.size_px < 2 * self.particle_box_px:
            raise CryoshotError(
                f"a micrograph of {self.size_px} px is too small for {self.particle_box_px} px particle boxes: "
                f"use --size {2 * self.particle_box_px} or more, or a smaller --particle-box"
            )
        if self.pixel_size_A <= 0:
            raise CryoshotError(f"pixel size must be positive, got {self.pixel_size_A} Å")
        if self.n_particles < 0:
            raise CryoshotError("number of particles must be >= 0")
        if not (0 <= self.ice_texture <= 10 and 0 <= self.ice_texture_exponent <= 3):
            raise CryoshotError(f"ice texture must be 0..10 noise sd with an exponent 0..3, got {self.ice_texture} "
                                f"and {self.ice_texture_exponent}")  # fmt: skip
        if self.n_ice_blobs < 0:
            raise CryoshotError("number of ice blobs must be >= 0")
        if self.min_distance_px is not None and self.min_distance_px < 0:
            raise CryoshotError(f"minimum particle distance must be >= 0 px, got {self.min_distance_px}")
        if self.ice_gradient_scale_px is not None and not self.ice_gradient_scale_px >= 2:
            raise CryoshotError(f"the ice gradient's scale must be at least 2 px, got {self.ice_gradient_scale_px}")


@dataclass
class Micrograph:
    """One simulated micrograph.

    Attributes
    ----------
    image : (H, W) float32
    clean : (H, W) float32, particles after CTF, no noise/background/contaminants
    coords_px : (N, 2) particle centres (x, y) in pixels
    labels : (N,) int, structure index
    matrices : (N, 3, 3) RELION rotation matrices
    defocus_um : float
    """

    image: np.ndarray
    clean: np.ndarray
    coords_px: np.ndarray
    labels: np.ndarray
    matrices: np.ndarray
    defocus_um: float


PLACEMENT_ROUNDS = 50
RSA_JAMMING = 0.55  # area fraction at which random sequential addition of discs stops


def placement_capacity(size: int, margin: float, min_dist: float) -> int:
    """Upper bound on how many points ``min_dist`` apart fit in ``[margin, size - margin)^2``.

    Discs of radius ``min_dist / 2`` around the points are disjoint and lie in the
    square grown by ``min_dist / 2`` on each side, so their total area bounds the count.
    Returns a huge number when ``min_dist <= 0`` (no exclusion).
    """
    side = max(size - 2 * margin, 0.0)
    if min_dist <= 0:
        return np.iinfo(np.int64).max
    return int(4.0 * (side + min_dist) ** 2 / (np.pi * min_dist**2)) + 1


def _greedy_keep(n: int, pairs: np.ndarray) -> np.ndarray:
    """Which of ``n`` ordered candidates sequential greedy keeps, given conflicting pairs ``(i, j)``, i < j.

    Candidate ``j`` is kept when no earlier kept candidate conflicts with it. Decided in
    vectorised sweeps: each sweep settles every candidate whose earlier neighbours are all
    settled (at least the first unsettled one), usually a handful of sweeps in all.
    """
    state = np.zeros(n, np.int8)  # 0 undecided, 1 kept, -1 dropped
    i, j = pairs[:, 0], pairs[:, 1]
    while True:
        und = state == 0
        if not und.any():
            return state == 1
        live = und[j]
        i, j = i[live], j[live]  # pairs whose later end is still undecided
        drop = np.zeros(n, bool)
        drop[j[state[i] == 1]] = True
        blocked = np.zeros(n, bool)
        blocked[j[state[i] == 0]] = True
        state[und & drop] = -1
        state[und & ~drop & ~blocked] = 1


def poisson_disk(
    rng: np.random.Generator, n: int, size: int, margin: float, min_dist: float, rounds: int = PLACEMENT_ROUNDS
) -> np.ndarray:
    """Up to ``n`` points (x, y) in ``[margin, size - margin)`` at least ``min_dist`` apart.

    Random sequential addition in bounded time: at most ``rounds`` batches of
    ``4 * missing + 16`` uniform candidates, each accepted in draw order when it keeps
    ``min_dist`` from every point accepted before it. ``n`` is first capped at
    :func:`placement_capacity`, so a request that cannot fit costs no more than one
    that fills the area; fewer than ``n`` points come back when they do not fit.
    """
    n = min(max(int(n), 0), placement_capacity(size, margin, min_dist))
    pts = np.zeros((0, 2))
    for _ in range(rounds):
        if len(pts) >= n:
            break
        cand = rng.uniform(margin, size - margin, size=(4 * (n - len(pts)) + 16, 2))
        if min_dist > 0:
            if len(pts):  # drop candidates too close to a point already placed
                dist, _ = cKDTree(pts).query(cand, distance_upper_bound=min_dist)
                cand = cand[dist >= min_dist]
            pairs = cKDTree(cand).query_pairs(min_dist, output_type="ndarray")
            cand = cand[_greedy_keep(len(cand), pairs)]
        pts = np.concatenate([pts, cand[: n - len(pts)]])
    return pts


def _smooth_field(rng: np.random.Generator, size: int, scale_px: float) -> np.ndarray:
    """Zero-mean, unit-variance random field varying over about ``scale_px`` pixels."""
    coarse = max(int(size / scale_px), 2) + 1
    grid = torch.from_numpy(rng.standard_normal((1, 1, coarse, coarse)).astype(np.float32))
    field = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)[0, 0].numpy()
    return (field - field.mean()) / (field.std() + 1e-12)


class MicrographSimulator:
    """Simulate micrographs of a mixture of structures (equal abundance)."""

    def __init__(self, structures: list[Structure], config: MicrographConfig):
        config.validate()
        if not structures:
            raise CryoshotError("no structures to simulate: give at least one")
        self.structures = structures
        self.config = config
        self.projector = FourierProjector(np.stack([s.density for s in structures]))
        # radius of each structure's footprint, from its projected support
        self.radius_px = np.array([self._footprint(s.density) for s in structures])

    @property
    def min_distance_px(self) -> float:
        """Smallest distance between particle centres (config value, else twice the largest footprint)."""
        return self.config.min_distance_px or 2.0 * float(self.radius_px.max())

    @property
    def expected_particles(self) -> int:
        """About how many particles one micrograph gets: all asked for, or as many as random placement fits.

        Random sequential addition jams at about 55% of the area bound of :func:`placement_capacity`.
        """
        c = self.config
        bound = placement_capacity(c.size_px, c.particle_box_px / 2, self.min_distance_px)
        return min(c.n_particles, int(RSA_JAMMING * bound) + 1)

    @staticmethod
    def _footprint(dens: np.ndarray) -> float:
        d = dens.shape[-1]
        zz, yy, xx = np.indices(dens.shape) - d // 2
        r = np.sqrt(zz**2 + yy**2 + xx**2)
        mask = dens > 0.05 * dens.max()
        return float(r[mask].max()) if mask.any() else d / 4

    def simulate(self, index: int) -> Micrograph:
        c = self.config
        rng = item_rng(c.seed, index, stream=_MIC_STREAM)
        d, size = c.particle_box_px, c.size_px
        coords = poisson_disk(rng, c.n_particles, size, margin=d / 2, min_dist=self.min_distance_px)
        n = len(coords)
        labels = rng.integers(len(self.structures), size=n)
        mats = Rotation.random(n, random_state=rng).as_matrix() if n else np.zeros((0, 3, 3))
        defocus = float(rng.uniform(c.defocus_min_um, c.defocus_max_um))
        mass = np.zeros((size, size), np.float32)
        mask = np.zeros((size, size), bool)
        if n:
            projs = self.projector.project(labels, mats)
            yy, xx = np.ogrid[:d, :d]
            r2 = (yy - d // 2) ** 2 + (xx - d // 2) ** 2
            discs = [r2 <= r * r for r in self.radius_px]
            for (x, y), p, lab in zip(coords, projs, labels, strict=True):
                ix, iy = int(round(x)) - d // 2, int(round(y)) - d // 2
                mass[iy : iy + d, ix : ix + d] += p
                mask[iy : iy + d, ix : ix + d] |= discs[lab]
        peak = float(np.abs(mass).max()) if n else 1.0
        contaminants = np.zeros_like(mass)
        for _ in range(c.n_ice_blobs):
            # ice crystal: a flat-topped blob, dense enough to stand out after the CTF
            cx, cy = rng.uniform(0, size, 2)
            rad = rng.uniform(1.5, 4.0) * d / 2
            x0, x1 = int(max(cx - 3 * rad, 0)), int(min(cx + 3 * rad, size))
            y0, y1 = int(max(cy - 3 * rad, 0)), int(min(cy + 3 * rad, size))
            yy, xx = np.ogrid[y0:y1, x0:x1]
            blob = np.exp(-((((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rad**2)) ** 2))
            contaminants[y0:y1, x0:x1] += (4.0 * peak * blob).astype(np.float32)
        if c.carbon_edge:
            # a straight edge at any angle, at most 0.3 x size from the centre, so it always crosses the field
            ang = rng.uniform(0, 2 * np.pi)
            off = rng.uniform(-0.3, 0.3) * size
            yy, xx = np.ogrid[:size, :size]
            half = np.float32((size - 1) / 2)
            dist = (np.float32(np.cos(ang)) * (xx.astype(np.float32) - half)
                    + np.float32(np.sin(ang)) * (yy.astype(np.float32) - half) - np.float32(off))  # fmt: skip
            contaminants += (np.float32(1.5 * peak) * expit(dist / np.float32(3.0))).astype(np.float32)
        h = self._ctf_image(size, defocus)
        clean = self._apply(mass, h)
        image = clean + self._apply(contaminants, h) if (c.n_ice_blobs or c.carbon_edge) else clean.copy()
        sig_var = float(clean[mask].var()) if mask.any() else float(clean.var()) or 1.0
        sigma = np.sqrt(sig_var / c.snr)
        if c.ice_gradient:
            ramp = _smooth_field(rng, size, c.ice_gradient_scale_px or size / 3)
            image = image + c.ice_gradient * sigma * ramp.astype(np.float32)
        noise = rng.standard_normal((size, size), dtype=np.float32)
        if c.structural_noise > 0:  # drawn only then, so the default's micrographs stay as they were
            structural = self._apply(rng.standard_normal((size, size), dtype=np.float32), h)
            noise = mix_structural(torch.from_numpy(noise)[None], torch.from_numpy(structural)[None],
                                   c.structural_noise)[0].numpy()  # fmt: skip
        noise *= np.float32(sigma / noise.std())  # exact SNR for every micrograph
        image = image + noise
        if c.ice_texture > 0:  # drawn only then, so micrographs without it stay as they were
            k_min = 1.0 / (8.0 * float(self.radius_px.mean()))  # 4 mean footprint diameters
            tex = self._apply(power_law_field(rng, (size, size), c.ice_texture_exponent, k_min).numpy(), h)
            image = image + np.float32(c.ice_texture * sigma / (tex.std() + 1e-12)) * tex
        if c.mtf_nyquist < 1:  # the detector blurs everything it records
            mtf = torch.from_numpy(detector_mtf_2d((size, size), c.mtf_nyquist))
            image, clean = self._apply(image, mtf), self._apply(clean, mtf)
        sign = np.float32(-1.0 if c.invert else 1.0)
        return Micrograph(
            image=(sign * image).astype(np.float32),
            clean=(sign * clean).astype(np.float32),
            coords_px=coords,
            labels=labels,
            matrices=mats,
            defocus_um=defocus,
        )

    def _ctf_image(self, size: int, defocus_um: float) -> torch.Tensor:
        """CTF on the rfft2 grid of a (size, size) image."""
        c = self.config
        ky = np.fft.fftfreq(size).astype(np.float32)[:, None]
        kx = np.fft.rfftfreq(size).astype(np.float32)[None, :]
        k_A = np.sqrt(kx**2 + ky**2) / np.float32(c.pixel_size_A)
        return torch.from_numpy(ctf(k_A, defocus_um, c.microscope).astype(np.float32))

    @staticmethod
    def _apply(img: np.ndarray, h: torch.Tensor) -> np.ndarray:
        return torch.fft.irfft2(torch.fft.rfft2(torch.from_numpy(img)) * h, s=img.shape).numpy()
