"""Batches of simulated particle images for training a Siamese embedding (triplet loss).

A batch holds ``n_structures`` structures x ``n_views`` random views x ``per_view``
images (classes = structure x view), so every anchor has positives (the same view)
and negatives of both kinds: another view of the same structure (what 2D
classification must separate) and other structures. Everything 2D classification
must ignore varies between the images of a view, drawn per image:

- the view itself, by up to ``jitter_deg``; the in-plane rotation (uniform); the
  shift (up to ``max_shift_px`` from the centre);
- the CTF: defocus, astigmatism and its angle, voltage, amplitude contrast, B-factor;
- the noise: SNR log-uniform in ``snr_range`` (whole-image variance, as the simulator's),
  white or partly coloured (a low-passed component); on top of it, for ``p_textured`` of the
  images, amorphous ice's texture (a power-law field through the image's CTF, its spectral
  exponent in [0.5, 1.5], its sd in ``texture_range`` noise sd; drawn from a stream of its own);
- neighbours: for ``p_neighbours`` of the images, one or two other particles (any structure of
  the pool, any view) touching the central one, at 0.8-1.2 times the sum of their radii, as
  in a crowded micrograph, so the picker's crops (which hold neighbours) are no surprise
  (drawn from a stream of its own);
- the structures of a batch: for ``p_size_matched`` of the batches, one structure and
  ``n_structures - 1`` others drawn from the ``2 n_structures`` closest to it in size (90%-mass
  radius), so most negatives are proteins a picker could take for the target, not ones of
  another size (drawn from a stream of its own);
- the preparation: phase-flipped with a slightly wrong defocus, or (``p_unflipped``) not
  at all, as for data without CTF columns.

Batch ``b`` is a pure function of ``(seed, b)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryoshot.data.particles2d import CTFParams, phase_flip, standardise
from cryoshot.simulate.noise import power_law_field
from cryoshot.simulate.optics import Microscope, ctf_2d_batch
from cryoshot.simulate.projector import FourierProjector
from cryoshot.simulate.structures import load_structures

_STREAM = 21
_TEXTURE_STREAM = 22
_NEIGHBOUR_STREAM = 23
_SIZE_STREAM = 24


# the fields ``cryoshot train siamese --simulator KEY=VALUE,...`` may set, with what each value is
SIMULATOR_KEYS = {
    "p_textured": "P (share 0..1)",
    "p_neighbours": "P (share 0..1)",
    "p_size_matched": "P (share 0..1)",
    "max_shift_px": "PX (view pixels)",
    "p_unflipped": "P (share 0..1; the picker's crops are never phase-flipped)",
}


@dataclass
class TripletDataConfig:
    """How training images vary (units in the names)."""

    box_px: int = 64
    pixel_size_A: float = 5.0
    n_structures: int = 8
    n_views: int = 4
    per_view: int = 4
    jitter_deg: float = 5.0
    max_shift_px: float = 3.0
    snr_range: tuple[float, float] = (0.02, 0.5)
    defocus_range_um: tuple[float, float] = (0.5, 3.5)
    max_astigmatism_um: float = 0.15
    b_factor_range_A2: tuple[float, float] = (0.0, 200.0)
    amplitude_contrast_range: tuple[float, float] = (0.05, 0.15)
    voltages_kv: tuple[float, ...] = (200.0, 300.0)
    p_coloured: float = 0.5
    p_textured: float = 0.0  # share of images with amorphous ice's texture on top of the noise
    texture_range: tuple[float, float] = (0.2, 1.5)  # its sd after the CTF, in noise sd
    p_neighbours: float = 0.0  # share of images with touching neighbours around the central particle
    p_size_matched: float = 0.0  # share of batches whose structures are close in size
    p_unflipped: float = 0.2
    defocus_error_um: float = 0.05

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @staticmethod
    def from_dict(d: dict) -> TripletDataConfig:
        return TripletDataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def mass_radius_px(density: np.ndarray, fraction: float = 0.9) -> float:
    """Radius (voxels) about the centre of mass holding ``fraction`` of a (D, D, D) density's positive mass."""
    rho = np.clip(np.asarray(density, np.float64), 0, None)
    grid = np.indices(rho.shape).reshape(3, -1).T
    w = rho.ravel()
    com = (grid * w[:, None]).sum(0) / max(w.sum(), 1e-12)
    r = np.linalg.norm(grid - com, axis=1)
    order = np.argsort(r)
    cum = np.cumsum(w[order])
    return float(r[order][np.searchsorted(cum, fraction * cum[-1])])


@dataclass
class ImageBatch:
    """Prepared images (B, 1, D, D) float32 tensor, class labels (B,), structure index (B,)."""

    images: torch.Tensor
    labels: torch.Tensor
    structure: np.ndarray


class ProjectionTriplets:
    """Simulated, prepared particle images in structure x view classes.

    Parameters
    ----------
    specs : structure specs (``procedural:A-B``, bundled names, files), as for ``simulate``
    config : how images vary
    seed : batch ``b`` depends only on ``(seed, b)``
    """

    def __init__(self, specs: list[str], config: TripletDataConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self.structures = load_structures(specs, config.pixel_size_A, config.box_px)
        self.projector = FourierProjector(np.stack([s.density for s in self.structures]))

    @cached_property
    def radii_px(self) -> np.ndarray:
        """(S,) each structure's radius (pixels) holding 90% of its mass; computed only when neighbours or
        size-matched batches are drawn."""
        return np.array([mass_radius_px(s.density) for s in self.structures])

    def size_matched(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """(count,) structure indices: a random one and ``count - 1`` of the ``2 count`` closest to it in radius."""
        anchor = int(rng.integers(len(self.structures)))
        gap = np.abs(self.radii_px - self.radii_px[anchor])
        gap[anchor] = np.inf
        near = np.argsort(gap, kind="stable")[: min(2 * count, len(self.structures) - 1)]
        return np.r_[anchor, rng.choice(near, count - 1, replace=False)]

    def neighbours(self, structure: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B, D, D) projections of the neighbours around each central ``structure[i]`` (zero where it has none)."""
        c, n, d = self.config, len(structure), self.config.box_px
        out = np.zeros((n, d, d), np.float32)
        counts = np.where(rng.uniform(size=n) < c.p_neighbours, 1 + (rng.uniform(size=n) < 0.4), 0)
        host = np.repeat(np.arange(n), counts)
        if not len(host):
            return out
        other = rng.integers(len(self.structures), size=len(host))
        proj = self.projector.project(other, Rotation.random(len(host), random_state=rng).as_matrix())
        dist = (self.radii_px[structure[host]] + self.radii_px[other]) * rng.uniform(0.8, 1.2, len(host))
        ang = rng.uniform(0, 2 * np.pi, len(host))
        for k, (i, r, a) in enumerate(zip(host, dist, ang, strict=True)):
            out[i] += ndimage.shift(proj[k], (r * np.sin(a), r * np.cos(a)), order=1, mode="constant")
        # taper to zero over the outer 8 px, so the CTF (a circular convolution here) does not wrap a neighbour
        # cut by the box edge round to the opposite edge
        edge = np.minimum(np.arange(d), np.arange(d)[::-1]).astype(np.float32)
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.clip(edge / 8.0, 0, 1))
        return out * ramp[:, None] * ramp[None, :]

    def render(
        self, structure: np.ndarray, views: Rotation, rng: np.random.Generator,
        texture_rng: np.random.Generator | None = None, neighbour_rng: np.random.Generator | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Noisy, CTF-filtered, prepared images of ``structure[i]`` seen near ``views[i]``. (B, D, D).

        ``texture_rng`` draws the ice texture (when ``p_textured`` > 0) and ``neighbour_rng`` the neighbours (when
        ``p_neighbours`` > 0), so every other draw stays as without them."""
        c, n, d = self.config, len(structure), self.config.box_px
        jit = Rotation.from_rotvec(
            rng.normal(size=(n, 3)) / np.sqrt(3) * np.deg2rad(c.jitter_deg) * rng.uniform(size=(n, 1))
        )
        inplane = Rotation.from_euler("z", rng.uniform(0, 360, (n, 1)), degrees=True)
        mats = (inplane * jit * views).as_matrix()
        proj = torch.from_numpy(self.projector.project(structure, mats))
        r = c.max_shift_px * np.sqrt(rng.uniform(size=n))
        t = rng.uniform(0, 2 * np.pi, n)
        sh = torch.from_numpy(np.stack([r * np.cos(t), r * np.sin(t)], 1).astype(np.float32))
        ky = torch.fft.fftfreq(d)[:, None]
        kx = torch.fft.rfftfreq(d)[None, :]
        phase = torch.exp(-2j * np.pi * (kx[None] * sh[:, 0, None, None] + ky[None] * sh[:, 1, None, None]))
        du = rng.uniform(*c.defocus_range_um, n)
        dv = du + rng.uniform(-c.max_astigmatism_um, c.max_astigmatism_um, n)
        ang = rng.uniform(0, 180, n)
        volt = rng.choice(np.asarray(c.voltages_kv), n)
        ac = rng.uniform(*c.amplitude_contrast_range, n)
        bfac = rng.uniform(*c.b_factor_range_A2, n)
        ctfs = np.empty((n, d, d // 2 + 1), np.float32)
        for i in range(n):  # per-image microscope (cheap at 64 px)
            mic = Microscope(voltage_kv=float(volt[i]), amplitude_contrast=float(ac[i]), b_factor_A2=float(bfac[i]))
            ctfs[i] = ctf_2d_batch(d, c.pixel_size_A, du[i : i + 1], dv[i : i + 1], ang[i : i + 1], mic)[0]
        clean = torch.fft.irfft2(torch.fft.rfft2(proj) * phase * torch.from_numpy(ctfs), s=(d, d))
        vs = clean.var(dim=(-2, -1))  # the SNR is the central particle's
        if c.p_neighbours > 0 and neighbour_rng is not None:
            extra = torch.from_numpy(self.neighbours(structure, neighbour_rng))
            clean = clean + torch.fft.irfft2(torch.fft.rfft2(extra) * phase * torch.from_numpy(ctfs), s=(d, d))
        noise = torch.from_numpy(rng.standard_normal((n, d, d)).astype(np.float32))
        col = rng.uniform(size=n) < c.p_coloured
        if col.any():  # add a low-passed component (a Gaussian of random width in Fourier space)
            k2 = (kx**2 + ky**2)[None]
            width = torch.from_numpy(rng.uniform(0.05, 0.2, int(col.sum())).astype(np.float32))[:, None, None]
            frac = torch.from_numpy(rng.uniform(0.2, 0.8, int(col.sum())).astype(np.float32))[:, None, None]
            lp = torch.fft.irfft2(torch.fft.rfft2(noise[col]) * torch.exp(-k2 / (2 * width**2)), s=(d, d))
            lp = lp / lp.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
            noise[col] = torch.sqrt(1 - frac) * noise[col] + torch.sqrt(frac) * lp
        snr = np.exp(rng.uniform(np.log(c.snr_range[0]), np.log(c.snr_range[1]), n)).astype(np.float32)
        vn = noise.var(dim=(-2, -1)).clamp_min(1e-12)
        noise_sd = torch.sqrt(vs / (torch.from_numpy(snr) * vn))
        images = (clean + noise * noise_sd[:, None, None]).numpy()
        if c.p_textured > 0 and texture_rng is not None:
            for i in np.nonzero(texture_rng.uniform(size=n) < c.p_textured)[0]:
                field = power_law_field(texture_rng, (d, d), float(texture_rng.uniform(0.5, 1.5)), 1.0 / d)
                tex = torch.fft.irfft2(torch.fft.rfft2(field) * torch.from_numpy(ctfs[i]), s=(d, d))
                amp = texture_rng.uniform(*c.texture_range) * float(noise_sd[i] * noise[i].std())
                images[i] += (amp / float(tex.std().clamp_min(1e-12)) * tex).numpy()
        flip = rng.uniform(size=n) >= c.p_unflipped
        if flip.any():
            err = rng.uniform(-c.defocus_error_um, c.defocus_error_um, int(flip.sum()))
            params = CTFParams(du[flip] + err, dv[flip] + err, ang[flip], volt[flip], np.full(int(flip.sum()), 2.7),
                               ac[flip])  # fmt: skip
            images[flip] = phase_flip(images[flip], c.pixel_size_A, params)
        return standardise(images)

    def batch(self, b: int) -> ImageBatch:
        """Training batch ``b``: (n_structures x n_views x per_view) prepared images with class labels."""
        c = self.config
        rng = np.random.default_rng([self.seed, _STREAM, int(b)])
        s_count = min(c.n_structures, len(self.structures))
        chosen = rng.choice(len(self.structures), s_count, replace=False)
        size_rng = np.random.default_rng([self.seed, _SIZE_STREAM, int(b)])
        if c.p_size_matched > 0 and size_rng.uniform() < c.p_size_matched:
            chosen = self.size_matched(s_count, size_rng)
        structure = np.repeat(chosen, c.n_views * c.per_view)
        labels = np.repeat(np.arange(s_count * c.n_views), c.per_view)
        views = Rotation.random(s_count * c.n_views, random_state=rng)[labels]
        images = self.render(structure, views, rng, np.random.default_rng([self.seed, _TEXTURE_STREAM, int(b)]),
                             np.random.default_rng([self.seed, _NEIGHBOUR_STREAM, int(b)]))  # fmt: skip
        return ImageBatch(torch.from_numpy(images)[:, None], torch.from_numpy(labels), structure)
