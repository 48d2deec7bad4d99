"""Wedge-compensated subtomogram averaging and reference-free iterative refinement.

Average (Fourier space, ``A_i``, ``t_i`` the pose of particle ``i``):

    avg(k) = Σ_i W_i'(k) P_i'(k) / (Σ_i W_i'(k) + ε N)

where ``P_i'`` is the particle brought back to the reference frame and ``W_i'``
its missing-wedge mask rotated the same way; ``ε`` (``wiener``, default 0.1) is
a Wiener-like constant that stops division by a near-empty wedge sum. Where
every particle measured a frequency the amplitude is scaled by 1 / (1 + ε).

Refinement is gold-standard: the particles are split into two random halves;
both start from one low-passed initial reference (made from the support
examples, or a random subset, aligned to their first member) and are then
aligned and averaged independently. The resolution is where the FSC between
the half maps falls below 0.143.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoshot.align.fourier import band_mask, rotate_fourier_weights, wedge_mask
from cryoshot.align.resolution import fsc_curve, resolution_at, soft_sphere_mask
from cryoshot.align.search import AlignConfig, Aligner
from cryoshot.data.transforms import fourier_resample
from cryoshot.errors import CryoshotError
from cryoshot.simulate.rotation import rotate_volumes

MIN_PARTICLES = 4  # two per half map


@torch.no_grad()
def wedge_average(
    volumes: torch.Tensor,
    matrices: torch.Tensor,
    shifts_px: torch.Tensor,
    wedge_half: torch.Tensor,
    wiener: float = 0.1,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Missing-wedge-compensated average of posed particles.

    Parameters
    ----------
    volumes : (N, D, D, D) float32 particles
    matrices : (N, 3, 3) rotations A (particle = reference rotated by A, then shifted)
    shifts_px : (N, 3) shifts t in voxels (x, y, z)
    wedge_half : (D, D, D//2+1) the particles' measured-Fourier mask
    wiener : ε, as a fraction of the number of particles

    Returns
    -------
    average : (D, D, D) float32
    weight : (D, D, D//2+1) float32, mean rotated wedge (fraction of particles measuring each frequency)
    """
    n, d = len(volumes), volumes.shape[-1]
    num = torch.zeros((d, d, d // 2 + 1), dtype=torch.complex64)
    den = torch.zeros((d, d, d // 2 + 1), dtype=torch.float32)
    for s in range(0, n, batch_size):
        a = matrices[s : s + batch_size].float()
        at = a.transpose(1, 2)
        back_shift = -(at @ shifts_px[s : s + batch_size].float()[..., None])[..., 0]
        back = rotate_volumes(volumes[s : s + batch_size].float(), at, back_shift)
        w = rotate_fourier_weights(wedge_half.float(), at)
        num += (torch.fft.rfftn(back, dim=(-3, -2, -1)) * w).sum(0)
        den += w.sum(0)
    avg = torch.fft.irfftn(num / (den + wiener * n), s=(d, d, d), dim=(-3, -2, -1))
    return avg, den / n


def crop_weight(weight_half: torch.Tensor, box: int) -> torch.Tensor:
    """A (D, D, D//2+1) Fourier weight restricted to the frequencies of a smaller box (d, d, d//2+1)."""
    d = weight_half.shape[0]
    if box == d:
        return weight_half
    idx = torch.cat([torch.arange(0, box // 2), torch.arange(d - box // 2, d)])
    return weight_half[idx][:, idx][..., : box // 2 + 1].contiguous()


@dataclass
class AverageConfig:
    """Settings of ``cryoshot average`` (units in the names)."""

    align: AlignConfig = field(default_factory=AlignConfig)
    iterations: int = 3
    wiener: float = 0.1
    init_count: int = 8
    init_lowpass_A: float = 60.0
    seed: int = 0

    def validate(self) -> None:
        self.align.validate()
        if self.iterations < 1:
            raise CryoshotError(f"--iterations must be at least 1, got {self.iterations}")
        if self.wiener <= 0:
            raise CryoshotError(f"the Wiener constant must be positive, got {self.wiener}")


@dataclass
class ClassAverage:
    """Result of refining one class.

    Attributes
    ----------
    average, half1, half2 : (D, D, D) float32 maps
    frequency_per_A : (S,) shell frequencies (1/Å); fsc : (S,) FSC between the half maps
    resolution_A : FSC = 0.143 resolution (Nyquist if never below)
    matrices : (N, 3, 3); shifts_A : (N, 3); scores : (N,); subset : (N,) 1 or 2
    """

    average: np.ndarray
    half1: np.ndarray
    half2: np.ndarray
    frequency_per_A: np.ndarray
    fsc: np.ndarray
    resolution_A: float
    matrices: np.ndarray
    shifts_A: np.ndarray
    scores: np.ndarray
    subset: np.ndarray


def _lowpass(vol: torch.Tensor, pixel_A: float, res_A: float) -> torch.Tensor:
    d = vol.shape[-1]
    f = torch.fft.rfftn(vol)
    m = torch.from_numpy(band_mask(d, pixel_A, res_A))
    m[0, 0, 0] = True
    return torch.fft.irfftn(f * m, s=vol.shape)


def initial_reference(
    volumes: torch.Tensor, pixel_A: float, config: AverageConfig, init: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average of the ``init`` particles (or a seeded random subset) aligned to the first of them.

    Returns the reference (D, D, D) at full resolution, low-passed to ``init_lowpass_A``, and its weight.
    """
    d = volumes.shape[-1]
    if init is None or len(init) == 0:
        rng = np.random.default_rng(config.seed)
        init = rng.choice(len(volumes), size=min(config.init_count, len(volumes)), replace=False)
    sub = volumes[torch.as_tensor(np.asarray(init))]
    al = Aligner(d, pixel_A, config.align)
    wedge = torch.from_numpy(wedge_mask(d, config.align.tilt_range_deg))
    mats = torch.eye(3).expand(len(sub), 3, 3).clone()
    shifts = torch.zeros(len(sub), 3)
    if len(sub) > 1:
        work = al.to_work(sub)
        ref = al.reference(work[0], crop_weight(wedge, al.work_box))
        r = al.align(work[1:], ref)
        mats[1:] = torch.from_numpy(r.matrices).float()
        shifts[1:] = torch.from_numpy(r.shifts_A / pixel_A).float()
    avg, weight = wedge_average(sub, mats, shifts, wedge, config.wiener)
    return _lowpass(avg, pixel_A, config.init_lowpass_A), weight


def refine_class(
    volumes: np.ndarray | torch.Tensor,
    pixel_A: float,
    config: AverageConfig | None = None,
    init: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    progress: bool = True,
    name: str = "class",
) -> ClassAverage:
    """Gold-standard iterative alignment and averaging of one class of particles (N, D, D, D)."""
    config = config or AverageConfig()
    config.validate()
    vols = torch.as_tensor(np.asarray(volumes, dtype=np.float32))
    n, d = len(vols), vols.shape[-1]
    if n < MIN_PARTICLES:
        raise CryoshotError(
            f"{name} has {n} particle(s); gold-standard averaging needs at least {MIN_PARTICLES} (two per half)"
        )
    wedge = torch.from_numpy(wedge_mask(d, config.align.tilt_range_deg))
    if reference is not None:
        ref0, ref_w = _lowpass(torch.as_tensor(reference, dtype=torch.float32), pixel_A, config.init_lowpass_A), None
    else:
        ref0, ref_w = initial_reference(vols, pixel_A, config, init)
    rng = np.random.default_rng(config.seed)
    subset = np.ones(n, dtype=np.int64)
    subset[rng.permutation(n)[n // 2 :]] = 2
    al = Aligner(d, pixel_A, config.align)
    work = al.to_work(vols)
    mats, shifts, scores = np.zeros((n, 3, 3)), np.zeros((n, 3)), np.zeros(n)
    halves = []
    bar = tqdm(total=2 * config.iterations, desc=f"averaging {name}", disable=not progress, leave=False)
    for h in (1, 2):
        sel = np.flatnonzero(subset == h)
        ref, w = ref0, ref_w
        for _ in range(config.iterations):
            ref_work = fourier_resample(ref[None], al.work_box)[0]
            fr = al.reference(ref_work, None if w is None else crop_weight(w, al.work_box))
            r = al.align(work[sel], fr)
            mats[sel], shifts[sel], scores[sel] = r.matrices, r.shifts_A, r.scores
            ref, w = wedge_average(
                vols[sel], torch.from_numpy(r.matrices), torch.from_numpy(r.shifts_A / pixel_A), wedge, config.wiener
            )
            bar.update()
        halves.append(ref)
    bar.close()
    avg, _ = wedge_average(vols, torch.from_numpy(mats), torch.from_numpy(shifts / pixel_A), wedge, config.wiener)
    mask = soft_sphere_mask(d)
    freq, fsc = fsc_curve(halves[0] * mask, halves[1] * mask, pixel_A)
    return ClassAverage(
        average=avg.numpy(),
        half1=halves[0].numpy(),
        half2=halves[1].numpy(),
        frequency_per_A=freq,
        fsc=fsc,
        resolution_A=resolution_at(freq, fsc, 0.143),
        matrices=mats,
        shifts_A=shifts,
        scores=scores,
        subset=subset,
    )


def superpose(moving: np.ndarray, target: np.ndarray, pixel_A: float, lowpass_A: float = 30.0) -> np.ndarray:
    """``moving`` (D, D, D) rotated and shifted onto ``target`` (fully measured maps; 15° grid, three local refinements)."""
    d = target.shape[-1]
    al = Aligner(d, pixel_A, AlignConfig(angular_step_deg=15.0, refine_levels=3, lowpass_A=lowpass_A,
                                         max_shift_A=d * pixel_A / 4, tilt_range_deg=None))  # fmt: skip
    r = al.align(al.to_work(target[None]), al.reference(al.to_work(moving[None])[0]))
    out = rotate_volumes(
        torch.as_tensor(moving[None], dtype=torch.float32),
        torch.from_numpy(r.matrices).float(),
        torch.from_numpy(r.shifts_A / pixel_A).float(),
    )
    return out[0].numpy()
