"""Picking episodes on simulated micrographs, for pre-training the picker's MAE.

Each episode is one fresh micrograph, simulated already on the picker's binned scale:
a target structure whose diameter spans 16 px times a random factor in [0.8, 1.25]
(a user's diameter is an estimate), two or three distractor structures, and random
imaging: SNR, defocus, amplitude contrast, B-factor, ice gradient, ice blobs, a carbon
edge, contrast sign (raw data: dark protein) and a mild blur that colours the noise; on
request, amorphous ice's texture, and the image prepared as the picker prepares a micrograph.
The exemplars are target particles (with a pixel of click error), as a user would give.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cryoshot.simulate.micrographs import MicrographConfig, MicrographSimulator
from cryoshot.simulate.optics import Microscope
from cryoshot.simulate.structures import (
    Structure,
    bundled_structure_names,
    expand_specs,
    load_structures,
    procedural_blobs,
)
from cryoshot.utils.seeding import item_rng

# pixel sizes (Å) on which structures are rendered: geometric, ratio 1.4, covering 60-350 Å particles at 16 px
LEVELS_A = tuple(3.75 * 1.4**k for k in range(6))
RENDER_BOX = 48
_EPISODE_STREAM = 11
_TEXTURE_STREAM = 12


def structure_diameter_A(spec: str) -> float:
    """Approximate diameter (Å) of a structure: procedural from its blob model, maps from their footprint."""
    if spec.startswith("procedural:"):
        c, s, _, _ = procedural_blobs(int(spec.split(":", 1)[1]))
        return float(2 * (np.linalg.norm(c, axis=1).max() + 1.5 * s.mean()))
    dens = load_structures([spec], 10.0, 48)[0].density
    return 2 * 10.0 * MicrographSimulator._footprint(dens)


@dataclass
class PickEpisode:
    """One simulated micrograph on the binned scale with its target particles.

    Attributes
    ----------
    image : (S, S) float32
    target_xy : (N, 2) binned coordinates of the target particles
    exemplar_xy : (m, 2) the exemplars (target particles with click error)
    all_xy : (M, 2) every particle (target and distractors)
    particle_px : target diameter on this scale (pixels)
    """

    image: np.ndarray
    target_xy: np.ndarray
    exemplar_xy: np.ndarray
    all_xy: np.ndarray
    particle_px: float


class PickEpisodeSampler:
    """Episodes from a list of structure specs (training: procedural + the 8 training maps)."""

    def __init__(
        self, specs: list[str], size_px: int = 320, n_exemplars: int = 15, seed: int = 0,
        ice_texture_max: float = 0.0, prepare: Callable[[np.ndarray, float], np.ndarray] | None = None,
    ):  # fmt: skip
        """``ice_texture_max`` > 0: 70% of the micrographs get amorphous ice's texture, its sd drawn in
        [0.2, ice_texture_max] noise sd and its spectral exponent in [0.5, 1.5] (from a stream of their
        own, so every other draw stays as without it); ``prepare(image, particle_px)``, when given, turns
        the simulated image into the network's input (the picker's preparation of a micrograph) instead
        of the default standardisation and clipping at ±5."""
        self.specs = expand_specs(specs)
        self.size_px, self.n_exemplars, self.seed = size_px, n_exemplars, seed
        self.ice_texture_max, self.prepare = ice_texture_max, prepare
        self.diam = np.array([structure_diameter_A(s) for s in self.specs])
        self._cache: dict[tuple[str, int], Structure] = {}

    def _structure(self, spec: str, level: int) -> Structure:
        key = (spec, level)
        if key not in self._cache:
            self._cache[key] = load_structures([spec], LEVELS_A[level], RENDER_BOX)[0]
        return self._cache[key]

    def episode(self, index: int, particle_px: float = 16.0) -> PickEpisode:
        rng = item_rng(self.seed, index, stream=_EPISODE_STREAM)
        for _ in range(100):
            level = int(rng.integers(len(LEVELS_A)))
            size_px = self.diam / LEVELS_A[level]
            lo, hi = 0.8 * particle_px, 1.25 * particle_px
            cand = np.nonzero((size_px >= lo) & (size_px <= hi))[0]
            if len(cand):
                break
        else:  # pragma: no cover - the levels cover 60-350 Å
            raise RuntimeError("no structure fits any pixel-size level")
        target = int(rng.choice(cand))
        others = np.nonzero((size_px >= 0.4 * particle_px) & (size_px <= 2.2 * particle_px))[0]
        others = others[others != target]
        k = int(min(len(others), rng.integers(1, 4)))
        distract = list(rng.choice(others, size=k, replace=False)) if k else []
        structs = [self._structure(self.specs[i], level) for i in [target, *distract]]
        area_frac = float(rng.uniform(0.03, 0.25))  # projected area covered by particles
        n_part = int(area_frac * self.size_px**2 / (np.pi * (particle_px / 2) ** 2))
        cfg = MicrographConfig(
            size_px=self.size_px, pixel_size_A=LEVELS_A[level], particle_box_px=RENDER_BOX, n_particles=n_part,
            snr=float(np.exp(rng.uniform(np.log(0.05), np.log(2.0)))),
            defocus_min_um=0.5, defocus_max_um=float(rng.uniform(1.0, 4.0)),
            microscope=Microscope(amplitude_contrast=float(rng.uniform(0.05, 0.15)),
                                  b_factor_A2=float(rng.uniform(0, 150))),
            ice_gradient=float(rng.uniform(0, 1.5)), n_ice_blobs=int(rng.poisson(0.4)),
            carbon_edge=bool(rng.random() < 0.15), invert=bool(rng.random() < 0.6),
            min_distance_px=float(rng.uniform(0.8, 1.3)) * particle_px,
            seed=int(rng.integers(2**31)),
        )  # fmt: skip
        if self.ice_texture_max > 0:
            tex_rng = item_rng(self.seed, index, stream=_TEXTURE_STREAM)
            if tex_rng.random() < 0.7:
                cfg.ice_texture = float(tex_rng.uniform(0.2, self.ice_texture_max))
                cfg.ice_texture_exponent = float(tex_rng.uniform(0.5, 1.5))
        sim = MicrographSimulator(structs, cfg)
        mic = sim.simulate(0)
        img = mic.image
        blur = float(rng.uniform(0, 0.8))
        if blur > 0.1:
            img = ndimage.gaussian_filter(img, blur)
        if self.prepare is not None:
            img = self.prepare(img, particle_px)
        else:
            img = np.clip((img - np.median(img)) / (img.std() + 1e-6), -5, 5)
        tgt = mic.coords_px[mic.labels == 0]
        m = min(self.n_exemplars, len(tgt))
        ex = tgt[rng.choice(len(tgt), size=m, replace=False)] if m else np.zeros((0, 2))
        ex = ex + rng.normal(0, 0.7, size=ex.shape)
        d = float(2 * sim.radius_px[0])
        return PickEpisode(img.astype(np.float32), tgt, ex, mic.coords_px, d)


def training_specs(n_procedural: int) -> list[str]:
    """Procedural 0..n-1 plus the 8 bundled training maps (never the novel ones)."""
    from cryoshot.simulate.splits import TRAIN_STRUCTURES

    assert set(TRAIN_STRUCTURES) <= set(bundled_structure_names())
    return [f"procedural:0-{n_procedural}", *TRAIN_STRUCTURES] if n_procedural else list(TRAIN_STRUCTURES)
