"""Fourier-space pieces of alignment: wedge masks, band masks, rotated weights, shift scores.

Conventions: volumes are (D, D, D) indexed (z, y, x); spectra are ``rfftn`` half
grids (D, D, D//2+1). Frequencies are in cycles per box. The tilt axis is y and
the beam is z at zero tilt, as in :mod:`cryoshot.simulate`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from cryoshot.errors import CryoshotError
from cryoshot.simulate.optics import rfft_freqs_3d
from cryoshot.simulate.rotation import rotate_volumes


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
    kz, ky, kx = rfft_freqs_3d(box)
    k = np.sqrt(kx**2 + ky**2 + kz**2) / (box * pixel_size_A)  # 1/Å
    m = (k <= 1.0 / lowpass_A) & (k > 0)
    if highpass_A is not None:
        m &= k >= 1.0 / highpass_A
    return m


def hermitian_weights(box: int) -> np.ndarray:
    """Weight of each ``rfftn`` coefficient in a full-spectrum sum: 2, or 1 on the kx = 0 and Nyquist planes."""
    w = np.full(box // 2 + 1, 2.0, np.float32)
    w[0] = 1.0
    if box % 2 == 0:
        w[-1] = 1.0
    return np.broadcast_to(w, (box, box, box // 2 + 1)).copy()


def half_to_full(w_half: torch.Tensor, box: int) -> torch.Tensor:
    """Expand a real, centro-symmetric weight map from the rfft half grid to the full grid.

    (..., D, D, D//2+1) -> (..., D, D, D), unshifted (index 0 = zero frequency).
    """
    h = box // 2 + 1
    full = torch.empty(w_half.shape[:-1] + (box,), dtype=w_half.dtype)
    full[..., :h] = w_half
    idx = (-torch.arange(box)) % box
    neg = w_half[..., idx, :, :][..., :, idx, :]  # w(-kz, -ky, kx)
    full[..., h:] = neg[..., (-torch.arange(h, box)) % box]
    return full


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
        n = 2 * d
        pad = torch.zeros((n, n, n), dtype=torch.float32)
        o = d - d // 2  # puts voxel d//2 at n//2
        pad[o : o + d, o : o + d, o : o + d] = volume
        spec = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(pad)))
        self._spec = torch.stack([spec.real, spec.imag])[None].contiguous()  # (1, 2, n, n, n)
        self._n, self._d, self._k = n, d, k
        self._weight = None
        if weight is not None:
            full = torch.fft.fftshift(half_to_full(weight.float(), d))
            self._weight = full[None, None].contiguous()

    def _coords(self, mats: torch.Tensor, scale: float, n: int) -> torch.Tensor:
        r = len(mats)  # rows (A^T k)^T = k^T A, as one matrix product -> (R, F, 3)
        kr = (self._k @ mats.float().permute(1, 0, 2).reshape(3, 3 * r)).view(-1, r, 3).transpose(0, 1)
        idx = kr * scale + n // 2
        return (idx * (2.0 / (n - 1)) - 1.0)[None, :, None]  # (1, R, 1, F, 3)

    def rotated(self, mats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Spectra (R, F) complex64 of the volume rotated by each of ``mats`` (R, 3, 3), and weights (R, F)."""
        g = F.grid_sample(self._spec, self._coords(mats, 2.0, self._n), align_corners=True)[0, :, :, 0]
        spec = torch.complex(g[0], g[1])
        if self._weight is None:
            return spec, None
        w = F.grid_sample(self._weight, self._coords(mats, 1.0, self._d), align_corners=True)
        return spec, w[0, 0, :, 0]
