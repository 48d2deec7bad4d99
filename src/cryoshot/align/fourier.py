"""Fourier-space pieces of alignment: wedge masks, band masks, rotated weights, shift scores.

Conventions: volumes are (D, D, D) indexed (z, y, x); spectra are ``rfftn`` half
grids (D, D, D//2+1). Frequencies are in cycles per box. The tilt axis is y and
the beam is z at zero tilt, as in :mod:`cryoshot.simulate`. Frequency grids, the
rfft weight helpers and the Fourier-slice sampler are :mod:`cryoshot.utils.fourier`'s
(``hermitian_weights`` and ``half_to_full`` are re-exported from there).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cryoshot.errors import CryoshotError
from cryoshot.simulate.rotation import rotate_volumes
from cryoshot.utils.fourier import (
    centred_spectrum,
    half_to_full,
    rfft_freqs_3d,
    rfft_radius,
    rotate_frequencies,
    sample_centred,
)
from cryoshot.utils.fourier import hermitian_weights as hermitian_weights  # re-exported


def wedge_mask(box: int, tilt_range_deg: tuple[float, float] | None = (-60.0, 60.0)) -> np.ndarray:
    """Measured region of a single-axis tilt series (1 = measured, 0 = missing wedge).

    A frequency is measured when it lies within one Fourier voxel of a tilt plane
    ``kx sin a + kz cos a = 0`` with ``a`` in the tilt range, as in the simulator.
    ``None`` means fully measured.

    Returns
    -------
    (D, D, D//2+1) float32
    """
    kz, ky, kx = rfft_freqs_3d(box)
    if tilt_range_deg is None:
        return np.ones(kz.shape, np.float32)
    lo, hi = (math.radians(t) for t in tilt_range_deg)
    if not -math.pi / 2 < lo <= hi < math.pi / 2:
        raise CryoshotError(f"tilt range must lie within (-90, 90) degrees with min <= max, got {tilt_range_deg}")
    # the tilt whose plane holds k exactly: tan a = -kz / kx  (a in (-90, 90])
    a = np.arctan2(-kz, kx)
    a = np.where(a > math.pi / 2, a - math.pi, np.where(a <= -math.pi / 2, a + math.pi, a))
    inside = (a >= lo) & (a <= hi)
    d_lo = np.abs(kx * math.sin(lo) + kz * math.cos(lo))
    d_hi = np.abs(kx * math.sin(hi) + kz * math.cos(hi))
    return (inside | (np.minimum(d_lo, d_hi) < 1.0)).astype(np.float32)


def band_mask(box: int, pixel_size_A: float, lowpass_A: float, highpass_A: float | None = None) -> np.ndarray:
    """1 for ``highpass_A > resolution >= lowpass_A`` (and never the zero frequency), (D, D, D//2+1) bool."""
    k = rfft_radius(box, 3, pixel_size_A)  # 1/Å
    m = (k <= 1.0 / lowpass_A) & (k > 0)
    if highpass_A is not None:
        m &= k >= 1.0 / highpass_A
    return m


def rotate_fourier_weights(w_half: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """Rotate a real Fourier weight map by each rotation: ``out(k) = w(A^T k)``.

    Parameters
    ----------
    w_half : (D, D, D//2+1) float32
    mats : (R, 3, 3) rotation matrices acting on (x, y, z)

    Returns
    -------
    (R, D, D, D//2+1) float32
    """
    d = w_half.shape[0]
    full = torch.fft.fftshift(half_to_full(w_half, d), dim=(-3, -2, -1))
    rot = rotate_volumes(full.expand(len(mats), d, d, d).contiguous(), mats.to(full.dtype))
    rot = torch.fft.ifftshift(rot, dim=(-3, -2, -1))
    return rot[..., : d // 2 + 1].contiguous()


def shift_phases(box: int, sel: np.ndarray, max_shift_px: int) -> tuple[torch.Tensor, np.ndarray]:
    """Phase factors that evaluate a cross-correlation at integer shifts within ``max_shift_px``.

    ``corr(t) = Re Σ_k X(k) exp(+2πi k·t / D)`` for the selected half-grid frequencies.

    Returns
    -------
    phases : (F, S) complex64, F = sel.sum(), S shifts in the ball of radius max_shift_px
    shifts : (S, 3) int, shifts (x, y, z) in voxels
    """
    m = max(int(max_shift_px), 0)
    r = np.arange(-m, m + 1)
    t = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    t = t[(t**2).sum(1) <= max(max_shift_px, 0) ** 2 + 1e-9]
    kz, ky, kx = rfft_freqs_3d(box)
    k = np.stack([kx[sel], ky[sel], kz[sel]], 1)  # (F, 3) in (x, y, z)
    ph = np.exp(2j * np.pi * (k @ t.T) / box).astype(np.complex64)
    return torch.from_numpy(ph), t


class FourierReference:
    """A reference ready to be rotated in Fourier space (2× zero-padded, trilinear sampling).

    Sampling the centred spectrum of the padded volume at ``A^T k`` gives the
    spectrum of the volume rotated by ``A`` about its centre (voxel ``D // 2``),
    at only the frequencies ``k`` the search uses: no real-space rotation and no
    FFT per rotation.

    Parameters
    ----------
    volume : (D, D, D) float32, D even
    weight : (D, D, D//2+1) float32 measured-Fourier weight of the volume, or None (fully measured)
    k : (F, 3) float32 frequencies (x, y, z) in cycles per box where spectra are wanted
    """

    def __init__(self, volume: torch.Tensor, weight: torch.Tensor | None, k: torch.Tensor):
        d = volume.shape[-1]
        self._spec = centred_spectrum(volume, 2)  # (2, 2D, 2D, 2D)
        self._k = k
        self._weight = None
        if weight is not None:
            self._weight = torch.fft.fftshift(half_to_full(weight.float(), d))[None].contiguous()  # (1, D, D, D)

    def rotated(self, mats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Spectra (R, F) complex64 of the volume rotated by each of ``mats`` (R, 3, 3), and weights (R, F)."""
        kr = rotate_frequencies(self._k, mats)
        g = sample_centred(self._spec, kr, 2.0)
        spec = torch.complex(g[0], g[1])
        if self._weight is None:
            return spec, None
        return spec, sample_centred(self._weight, kr, 1.0)[0]
