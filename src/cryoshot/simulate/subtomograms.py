"""Simulated subtomograms: rotation, shift, 3D CTF + missing wedge + dose, calibrated noise.

Item ``i`` is a pure function of ``(seed, i)``: its class is ``i mod n_classes``
and its pose, defocus and noise come from the generator ``item_rng(seed, i)``.

Two paths produce the same physics:

- ``fast`` (default): the 3D transfer function (see :mod:`optics`) is built once
  per defocus (quantised to 0.05 µm) and applied in Fourier space, batched in torch.
- ``tiltseries``: projects the rotated particle at every tilt, applies the CTF and
  dose per tilt image, adds noise per tilt, and reconstructs by weighted
  back-projection. Slow; used to validate the fast path.

Per-item variation (off by default; for training pools that should look like many
datasets rather than one): the ends of the tilt range, the B-factor, neighbouring
particles at the box edge, and the share of items made by the tilt-series path. These
draws come from their own random stream, so switching them on leaves every item's pose,
defocus and noise as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch

from cryoshot.errors import CryoshotError
from cryoshot.simulate.noise import SNR_CONVENTIONS, box_noise_scale, check_snr
from cryoshot.simulate.optics import (
    Microscope,
    TiltScheme,
    check_imaging,
    ctf_2d,
    dose_filter,
    rfft_freqs_2d,
    transfer_function_3d,
)
from cryoshot.simulate.rotation import random_rotations, rotate_volumes
from cryoshot.simulate.structures import Structure
from cryoshot.utils.seeding import item_rng

DEFOCUS_STEP_UM = 0.05
TILT_JITTER_STEP_DEG = 5.0
B_FACTOR_STEP_A2 = 25.0
_ITEM_STREAM = 1
_VARIATION_STREAM = 3  # stream 2 is the tilt-series path's noise


@dataclass
class SubtomogramConfig:
    """Settings of a subtomogram simulation (units in the names)."""

    box_px: int = 40
    pixel_size_A: float = 10.0
    snr: float = 0.05
    snr_convention: Literal["box", "projection"] = "box"
    tilt_min_deg: float = -60.0
    tilt_max_deg: float = 60.0
    tilt_step_deg: float = 3.0
    dose_e_per_A2: float = 120.0
    defocus_min_um: float = 2.0
    defocus_max_um: float = 5.0
    microscope: Microscope = field(default_factory=Microscope)
    max_shift_px: float = 2.0
    use_ctf: bool = True
    use_wedge: bool = True
    use_dose: bool = True
    invert: bool = False
    method: Literal["fast", "tiltseries"] = "fast"
    seed: int = 0
    # per-item variation (0: off)
    tilt_jitter_deg: float = 0.0  # each end of the tilt range moves by U(-j, j), rounded to 5 degrees
    b_factor_max_A2: float = 0.0  # B-factor U(microscope.b_factor_A2, this), rounded to 25 Å²
    neighbours: float = 0.0  # mean number (Poisson) of other particles centred 0.5-0.8 box widths away
    tiltseries_fraction: float = 0.0  # share of items made by the tilt-series path (method "fast")

    def validate(self) -> None:
        check_snr(self.snr)
        self.microscope.validate()
        check_imaging(self.defocus_min_um, self.defocus_max_um, self.microscope.amplitude_contrast)
        if self.snr_convention not in SNR_CONVENTIONS:
            raise CryoshotError(f"SNR convention must be one of {SNR_CONVENTIONS}, got '{self.snr_convention}'")
        if self.method not in ("fast", "tiltseries"):
            raise CryoshotError(f"method must be 'fast' or 'tiltseries', got '{self.method}'")
        if self.box_px < 8:
            raise CryoshotError(f"box must be at least 8 voxels, got {self.box_px}")
        if self.pixel_size_A <= 0:
            raise CryoshotError(f"pixel size must be positive, got {self.pixel_size_A} Å")
        if self.tilt_step_deg <= 0 or self.tilt_min_deg > self.tilt_max_deg:
            raise CryoshotError("tilt range must have min <= max and a positive step")
        if not -90 <= self.tilt_min_deg <= self.tilt_max_deg <= 90:
            raise CryoshotError(f"tilts must lie within -90..90 degrees, got {self.tilt_min_deg}..{self.tilt_max_deg}")
        if self.dose_e_per_A2 <= 0:
            raise CryoshotError(f"the total dose must be positive, got {self.dose_e_per_A2} e/Å²")
        if not 0 <= self.tilt_jitter_deg <= 30:
            raise CryoshotError(f"tilt jitter must be within 0..30 degrees, got {self.tilt_jitter_deg}")
        if self.b_factor_max_A2 and not self.microscope.b_factor_A2 <= self.b_factor_max_A2 <= 10_000:
            raise CryoshotError(f"the largest B-factor must lie within microscope.b_factor_A2.."
                                f"10000 Å², got {self.b_factor_max_A2}")  # fmt: skip
        if not 0 <= self.neighbours <= 10:
            raise CryoshotError(f"the mean number of neighbours must be within 0..10, got {self.neighbours}")
        if not 0 <= self.tiltseries_fraction <= 1:
            raise CryoshotError(f"the tilt-series fraction must be within 0..1, got {self.tiltseries_fraction}")
        if not 0 <= self.max_shift_px <= self.box_px / 4:
            raise CryoshotError(
                f"the largest shift must be within 0..box/4 = {self.box_px / 4:g} voxels (so the particle stays "
                f"in its box), got {self.max_shift_px}"
            )

    @property
    def scheme(self) -> TiltScheme:
        return TiltScheme(self.tilt_min_deg, self.tilt_max_deg, self.tilt_step_deg, self.dose_e_per_A2)


@dataclass
class _Variation:
    """One item's draw of the per-item variation: tilt scheme, microscope, neighbours, path."""

    scheme: TiltScheme
    microscope: Microscope
    neighbours: list  # (class index, (3, 3) rotation, (3,) shift in voxels (x, y, z)) per neighbour
    tiltseries: bool


@dataclass
class SubtomogramBatch:
    """A batch of simulated subtomograms.

    Attributes
    ----------
    volumes : (B, D, D, D) float32, noisy, indexed (z, y, x)
    clean : (B, D, D, D) float32 or None, the same volumes without noise (filtered signal)
    labels : (B,) int, class index into the structure list
    indices : (B,) int, item indices
    matrices : (B, 3, 3) RELION rotation matrices A (particle = reference rotated by A)
    shifts_px : (B, 3) shifts (x, y, z) in voxels
    defocus_um : (B,) defocus in µm
    """

    volumes: np.ndarray
    clean: np.ndarray | None
    labels: np.ndarray
    indices: np.ndarray
    matrices: np.ndarray
    shifts_px: np.ndarray
    defocus_um: np.ndarray
    extra: dict = field(default_factory=dict)


class SubtomogramSimulator:
    """Simulate subtomograms of a list of structures (one class per structure).

    Parameters
    ----------
    structures : list of Structure, all on ``config.box_px`` at ``config.pixel_size_A``
    config : SubtomogramConfig
    """

    def __init__(self, structures: list[Structure], config: SubtomogramConfig):
        config.validate()
        if not structures:
            raise CryoshotError("no structures to simulate: give at least one class")
        for s in structures:
            if s.density.shape != (config.box_px,) * 3:
                raise CryoshotError(f"structure {s.name} has box {s.density.shape}, expected {config.box_px}")
        self.structures = structures
        self.config = config
        self._dens = torch.from_numpy(np.stack([s.density for s in structures]).astype(np.float32))

    @property
    def n_classes(self) -> int:
        return len(self.structures)

    def _draw(self, i: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray, float]:
        c = self.config
        rng = item_rng(c.seed, i, stream=_ITEM_STREAM)
        mat = random_rotations(rng)
        # uniform shift in a ball of radius max_shift_px
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction) + 1e-12
        shift = direction * c.max_shift_px * rng.uniform() ** (1 / 3)
        df = rng.uniform(c.defocus_min_um, c.defocus_max_um)
        df = round(df / DEFOCUS_STEP_UM) * DEFOCUS_STEP_UM
        return rng, mat, shift, max(df, DEFOCUS_STEP_UM)

    def _variation(self, i: int) -> _Variation:
        """Item ``i``'s tilt scheme, microscope, neighbours and path (the config's own when variation is off)."""
        c = self.config
        rng = item_rng(c.seed, i, stream=_VARIATION_STREAM)
        scheme, mic = c.scheme, c.microscope
        if c.tilt_jitter_deg:
            lo, hi = (v + rng.uniform(-c.tilt_jitter_deg, c.tilt_jitter_deg) for v in (c.tilt_min_deg, c.tilt_max_deg))
            lo, hi = (float(np.clip(round(v / TILT_JITTER_STEP_DEG) * TILT_JITTER_STEP_DEG, -90, 90)) for v in (lo, hi))
            scheme = TiltScheme(min(lo, hi), max(lo, hi), c.tilt_step_deg, c.dose_e_per_A2)
        if c.b_factor_max_A2:
            b = rng.uniform(mic.b_factor_A2, c.b_factor_max_A2)
            mic = replace(mic, b_factor_A2=float(round(b / B_FACTOR_STEP_A2) * B_FACTOR_STEP_A2))
        neighbours = []
        for _ in range(rng.poisson(c.neighbours) if c.neighbours else 0):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction) + 1e-12
            shift = direction * c.box_px * rng.uniform(0.5, 0.8)
            neighbours.append((int(rng.integers(self.n_classes)), random_rotations(rng), shift))
        tiltseries = c.method == "tiltseries" or bool(c.tiltseries_fraction and rng.uniform() < c.tiltseries_fraction)
        return _Variation(scheme, mic, neighbours, tiltseries)

    def _tf(self, df: float, scheme: TiltScheme | None = None, mic: Microscope | None = None):
        c = self.config
        return transfer_function_3d(
            c.box_px, c.pixel_size_A, round(df, 4), scheme or c.scheme, mic or c.microscope, c.use_ctf, c.use_dose,
            c.use_wedge,
        )  # fmt: skip

    def _add_neighbours(self, rotated: torch.Tensor, variations: list[_Variation]) -> torch.Tensor:
        """Add each item's neighbouring particles (rotated and shifted copies of any class) to its volume."""
        rows = [(b, n) for b, v in enumerate(variations) for n in v.neighbours]
        if not rows:
            return rotated
        cls = torch.as_tensor([n[0] for _, n in rows])
        mats = torch.from_numpy(np.stack([n[1] for _, n in rows]))
        shifts = torch.from_numpy(np.stack([n[2] for _, n in rows]))
        placed = rotate_volumes(self._dens[cls], mats, shifts)
        return rotated.index_add(0, torch.as_tensor([b for b, _ in rows]), placed)

    def simulate(self, indices: np.ndarray | list[int] | range, with_clean: bool = True) -> SubtomogramBatch:
        """Simulate items ``indices`` (any order; each item depends only on seed and index).

        ``with_clean=False`` skips the noise-free volumes (``clean`` is then None), which
        saves one inverse FFT per item when only the noisy data are needed (training).
        """
        c = self.config
        idx = np.asarray(list(indices), dtype=np.int64)
        d = c.box_px
        draws = [self._draw(int(i)) for i in idx]
        labels = idx % self.n_classes
        mats = np.stack([m for _, m, _, _ in draws])
        shifts = np.stack([s for _, _, s, _ in draws])
        dfs = np.array([df for _, _, _, df in draws])
        variations = [self._variation(int(i)) for i in idx]
        ts = np.array([v.tiltseries for v in variations], dtype=bool)
        # white noise of the fast path, drawn after the pose as before (the tilt-series path has its own stream)
        white = {k: draws[k][0].standard_normal((d, d, d), dtype=np.float32) for k in np.nonzero(~ts)[0]}
        with torch.no_grad():
            rotated = rotate_volumes(
                self._dens[torch.from_numpy(labels)], torch.from_numpy(mats), torch.from_numpy(shifts)
            )
            rotated = self._add_neighbours(rotated, variations)
            fast, slow = np.nonzero(~ts)[0], np.nonzero(ts)[0]
            if not len(slow):
                clean, vols = self._fast(rotated, torch.from_numpy(np.stack([white[k] for k in fast])), dfs,
                                         with_clean, variations)  # fmt: skip
            else:
                vols = torch.empty_like(rotated)
                clean = torch.empty_like(rotated) if with_clean else None
                if len(fast):
                    w = torch.from_numpy(np.stack([white[k] for k in fast]))
                    cf, vols[fast] = self._fast(rotated[fast], w, dfs[fast], with_clean, [variations[k] for k in fast])
                    if clean is not None:
                        clean[fast] = cf
                cs, ns = self._tiltseries(rotated[slow], dfs[slow], idx[slow], [variations[k] for k in slow])
                vols[slow] = cs + ns
                if clean is not None:
                    clean[slow] = cs
        if c.invert:
            vols = -vols
            clean = -clean if clean is not None else None
        return SubtomogramBatch(
            volumes=vols.numpy(),
            clean=clean.numpy() if clean is not None else None,
            labels=labels,
            indices=idx,
            matrices=mats,
            shifts_px=shifts,
            defocus_um=dfs,
        )

    # -- fast path -------------------------------------------------------------------------
    def _fast(self, rotated: torch.Tensor, white: torch.Tensor, dfs: np.ndarray, with_clean: bool,
              variations: list[_Variation]):  # fmt: skip
        """Fourier-space path; variances via Parseval so the volume needs a single inverse FFT."""
        c = self.config
        d = c.box_px
        tfs = [self._tf(df, v.scheme, v.microscope) for df, v in zip(dfs, variations, strict=True)]
        sig_tf = torch.from_numpy(np.stack([t.signal for t in tfs]))
        noise_amp = torch.from_numpy(np.sqrt(np.stack([t.noise_psd for t in tfs])))
        f = torch.fft.rfftn(rotated, dim=(-3, -2, -1))
        s_hat = f * sig_tf
        n_hat = torch.fft.rfftn(white, dim=(-3, -2, -1)) * noise_amp
        if c.snr_convention == "box":
            scale = torch.sqrt(_rfft_var(s_hat, d) / (c.snr * _rfft_var(n_hat, d).clamp_min(1e-30)))
        else:
            var_p = self._projection_signal_var(f, dfs)
            scale = torch.sqrt(var_p / c.snr / d)
        n_hat = n_hat * scale.view(-1, 1, 1, 1)
        clean = torch.fft.irfftn(s_hat, s=(d, d, d), dim=(-3, -2, -1)) if with_clean else None
        vols = torch.fft.irfftn(s_hat + n_hat, s=(d, d, d), dim=(-3, -2, -1))
        return clean, vols

    def _projection_signal_var(self, f: torch.Tensor, dfs: np.ndarray) -> torch.Tensor:
        """Variance of each item's 0-degree projection with CTF and dose (per-projection SNR)."""
        c = self.config
        d = c.box_px
        p_hat = f[:, 0]  # kz = 0 plane: FT of the projection along z
        ky, kx = rfft_freqs_2d(d)
        k_A = np.sqrt(kx**2 + ky**2) / (d * c.pixel_size_A)
        w = np.ones_like(k_A)
        if c.use_dose:
            w = w * dose_filter(k_A, c.scheme.prior_dose()[np.argmin(np.abs(c.scheme.angles_deg()))])
        ctfs = np.stack([ctf_2d(d, c.pixel_size_A, df, c.microscope) if c.use_ctf else np.ones_like(k_A) for df in dfs])
        proj = torch.fft.irfftn(p_hat * torch.from_numpy((ctfs * w).astype(np.float32)), s=(d, d), dim=(-2, -1))
        return proj.var(dim=(-2, -1), unbiased=False)

    # -- tilt-series path ----------------------------------------------------------------
    def _tiltseries(self, rotated: torch.Tensor, dfs: np.ndarray, idx: np.ndarray, variations: list[_Variation]):
        c = self.config
        d = c.box_px
        ky, kx = rfft_freqs_2d(d)
        k_A = np.sqrt(kx**2 + ky**2) / (d * c.pixel_size_A)
        ramp = np.abs(kx) / (d / 2)
        ramp[0, 0] = 1.0 / d
        ramp_t = torch.from_numpy(ramp.astype(np.float32))
        cleans, noises = [], []
        for b in range(rotated.shape[0]):
            scheme, mic = variations[b].scheme, variations[b].microscope
            angles = scheme.angles_deg() if c.use_wedge else np.arange(-90, 90, 180 / (np.pi * d))
            doses = scheme.prior_dose() if c.use_wedge else np.zeros(len(angles))
            n_t = len(angles)
            rad = np.deg2rad(angles)
            # tilt t rotates the specimen about y by +theta before projecting along z
            mats = np.stack([np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]) for a in rad])
            vol = rotated[b : b + 1].expand(n_t, d, d, d)
            tilted = rotate_volumes(vol.contiguous(), torch.from_numpy(mats))
            proj = tilted.sum(dim=1)  # along z -> (T, y, x)
            ctf_t = ctf_2d(d, c.pixel_size_A, dfs[b], mic) if c.use_ctf else np.ones_like(k_A)
            filt = np.stack([ctf_t * (dose_filter(k_A, dz) if c.use_dose else 1.0) for dz in doses])
            proj = torch.fft.irfftn(
                torch.fft.rfftn(proj, dim=(-2, -1)) * torch.from_numpy(filt.astype(np.float32)),
                s=(d, d),
                dim=(-2, -1),
            )
            rng = item_rng(c.seed, int(idx[b]), stream=_ITEM_STREAM + 1)
            noise2d = torch.from_numpy(rng.standard_normal((n_t, d, d), dtype=np.float32))
            if c.snr_convention == "projection":
                zero = int(np.argmin(np.abs(angles)))
                noise2d = noise2d * torch.sqrt(proj[zero].var(unbiased=False) / c.snr)
            rec_s = self._backproject(proj, mats, ramp_t)
            rec_n = self._backproject(noise2d, mats, ramp_t)
            cleans.append(rec_s)
            noises.append(rec_n)
        clean = torch.stack(cleans)
        noise = torch.stack(noises)
        if c.snr_convention == "box":
            noise = noise * box_noise_scale(clean, noise, c.snr).view(-1, 1, 1, 1)
        return clean, noise

    @staticmethod
    def _backproject(images: torch.Tensor, mats: np.ndarray, ramp: torch.Tensor) -> torch.Tensor:
        """Weighted back-projection of (T, D, D) images taken at tilt matrices ``mats``."""
        t, d = images.shape[0], images.shape[-1]
        filt = torch.fft.irfftn(torch.fft.rfftn(images, dim=(-2, -1)) * ramp, s=(d, d), dim=(-2, -1))
        smeared = filt[:, None].expand(t, d, d, d).contiguous()
        back = rotate_volumes(smeared, torch.from_numpy(np.transpose(mats, (0, 2, 1))).contiguous())
        return back.sum(0) / t


def _rfft_var(x_hat: torch.Tensor, d: int) -> torch.Tensor:
    """Per-item variance of real (B, D, D, D) volumes from their ``rfftn`` (Parseval)."""
    w = torch.full((x_hat.shape[-1],), 2.0)
    w[0] = 1.0
    if d % 2 == 0:
        w[-1] = 1.0
    n = float(d) ** 3
    power = (x_hat.real**2 + x_hat.imag**2) * w
    mean = x_hat[:, 0, 0, 0].real / n
    return power.sum(dim=(-3, -2, -1)) / n**2 - mean**2


def config_with_overrides(overrides: dict[str, object], **base) -> SubtomogramConfig:
    """A validated :class:`SubtomogramConfig` from ``base`` fields plus ``overrides``.

    ``overrides`` maps field names to values, with ``microscope.<field>`` for the nested
    microscope (e.g. ``{"max_shift_px": 5, "microscope.b_factor_A2": 200}``); text values (from the
    command line) are converted to the field's type. An unknown name is a clear error naming it.
    """
    import dataclasses

    cfg = SubtomogramConfig(**base)
    mic: dict[str, object] = {}
    top: dict[str, object] = {}
    fields = {f.name: f for f in dataclasses.fields(SubtomogramConfig) if f.name != "microscope"}
    mic_fields = {f.name: f for f in dataclasses.fields(Microscope)}
    for key, value in overrides.items():
        name = str(key)
        target, table, short = (mic, mic_fields, name.split(".", 1)[1]) if name.startswith("microscope.") else (
            top, fields, name)  # fmt: skip
        if short not in table or (table is fields and short in base):
            allowed = sorted([n for n in fields if n not in base] + [f"microscope.{n}" for n in mic_fields])
            raise CryoshotError(f"unknown simulator setting '{name}'; allowed: {', '.join(allowed)}")
        default = getattr(cfg.microscope if target is mic else cfg, short)
        target[short] = _convert(name, value, type(default))
    cfg = dataclasses.replace(cfg, **top, microscope=dataclasses.replace(cfg.microscope, **mic))
    cfg.validate()
    return cfg


def _convert(name: str, value: object, kind: type):
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        return kind(float(text)) if kind is int else kind(text)
    except ValueError:
        raise CryoshotError(f"simulator setting '{name}' needs a {kind.__name__}, got '{value}'") from None
