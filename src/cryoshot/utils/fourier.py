"""Fourier-space helpers shared by the simulator, alignment and data transforms.

One Fourier-slice sampler and one set of frequency / Fourier-weight helpers.

Conventions
-----------
- Volumes are (D, D, D) indexed (z, y, x), images (D, D) indexed (y, x); both are
  centred at voxel D // 2. Vectors and rotation matrices act on (x, y, z).
- Frequencies are in cycles per box (the integer DFT indices, signed) unless a
  pixel size in Å is given, in which case they are in 1/Å.
- ``rfftn`` spectra are half grids (D, D, D//2+1) in FFT order (index 0 = zero frequency).
- A *centred* spectrum is ``fftshift(fftn(ifftshift(x)))``: phases about the box centre
  and the zero frequency at index n // 2.

Fourier-slice theorem, as used here: if ``S`` is the centred spectrum of a volume,
the volume rotated actively by ``A`` about its centre has spectrum ``S(A^T k)``; a
projection along z is the slice ``k_z = 0`` of that. :func:`rotate_frequencies`
gives ``A^T k`` and :func:`sample_centred` interpolates ``S`` there (trilinear,
``grid_sample``), on a spectrum zero-padded ``pad_factor`` times by
:func:`centred_spectrum` so that the interpolation is accurate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_DIMS3 = (-3, -2, -1)


# -- frequency grids -----------------------------------------------------------------------------
def rfft_freqs_3d(box: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frequencies of ``rfftn`` over a (z, y, x) box.

    Returns
    -------
    kz, ky, kx : each (D, D, D//2+1) float64, cycles per box
    """
    f = np.fft.fftfreq(box) * box
    fr = np.fft.rfftfreq(box) * box
    return np.meshgrid(f, f, fr, indexing="ij")


def rfft_freqs_2d(box: int) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies of ``rfft2`` over a (y, x) image.

    Returns
    -------
    ky, kx : each (D, D//2+1) float64, cycles per box
    """
    f = np.fft.fftfreq(box) * box
    fr = np.fft.rfftfreq(box) * box
    return np.meshgrid(f, fr, indexing="ij")


def rfft_radius(box: int, ndim: int = 3, pixel_size_A: float | None = None) -> np.ndarray:
    """Radial frequency ``|k|`` on the ``rfftn`` grid of a D^ndim box (ndim 2 or 3).

    Returns
    -------
    (D, D, D//2+1) or (D, D//2+1) float64: cycles per box, or 1/Å when ``pixel_size_A`` (Å) is given
    """
    if ndim == 3:
        kz, ky, kx = rfft_freqs_3d(box)
        k = np.sqrt(kx**2 + ky**2 + kz**2)
    elif ndim == 2:
        ky, kx = rfft_freqs_2d(box)
        k = np.sqrt(kx**2 + ky**2)
    else:
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    return k if pixel_size_A is None else k / (box * pixel_size_A)


def central_slice_frequencies(box: int) -> torch.Tensor:
    """Frequencies of the central slice ``k_z = 0`` of a centred D^3 spectrum.

    Returns
    -------
    (D * D, 3) float32, (kx, ky, 0) in cycles per box, row-major over (ky, kx) in
    centred order (index D // 2 = zero frequency): reshape results to (D, D).
    """
    f = torch.arange(box, dtype=torch.float32) - box // 2
    fy, fx = torch.meshgrid(f, f, indexing="ij")
    return torch.stack([fx, fy, torch.zeros_like(fx)], dim=-1).reshape(-1, 3)


# -- Fourier weights on the rfft half grid -----------------------------------------------------------
def hermitian_weights(box: int) -> np.ndarray:
    """Weight of each ``rfftn`` coefficient in a full-spectrum sum.

    Returns
    -------
    (D, D, D//2+1) float32: 2, or 1 on the kx = 0 and (even D) Nyquist planes
    """
    w = np.full(box // 2 + 1, 2.0, np.float32)
    w[0] = 1.0
    if box % 2 == 0:
        w[-1] = 1.0
    return np.broadcast_to(w, (box, box, box // 2 + 1)).copy()


def half_to_full(w_half: torch.Tensor, box: int) -> torch.Tensor:
    """Expand a real, centro-symmetric weight map from the rfft half grid to the full grid.

    Parameters
    ----------
    w_half : (..., D, D, D//2+1) real weights, ``w(-k) = w(k)``
    box : D

    Returns
    -------
    (..., D, D, D) unshifted (index 0 = zero frequency), same dtype
    """
    h = box // 2 + 1
    full = torch.empty(w_half.shape[:-1] + (box,), dtype=w_half.dtype)
    full[..., :h] = w_half
    idx = (-torch.arange(box)) % box
    neg = w_half[..., idx, :, :][..., :, idx, :]  # w(-kz, -ky, kx)
    full[..., h:] = neg[..., (-torch.arange(h, box)) % box]
    return full


def crop_rfft(f: torch.Tensor, n: int) -> torch.Tensor:
    """Keep the frequencies of a smaller box: (..., D, D, D//2+1) -> (..., n, n, n//2+1), n <= D.

    Frequencies 0 .. ceil(n/2)-1 and -floor(n/2) .. -1 are kept on the full axes and
    0 .. n//2 on the half axis (cycles per box; values are not rescaled).
    """
    d = f.shape[-2]
    lo, hi = (n + 1) // 2, n // 2
    idx = torch.cat([torch.arange(lo), torch.arange(d - hi, d)])
    return f.index_select(-3, idx).index_select(-2, idx)[..., : n // 2 + 1]


# -- real-space boxes ----------------------------------------------------------------------------
def center_crop_or_pad(x: torch.Tensor, box: int) -> torch.Tensor:
    """Crop or zero-pad the last three axes of (..., D, D, D) to (..., box, box, box).

    Voxel D // 2 goes to voxel box // 2 (the centre stays the centre); same dtype and device.
    Used on centred spectra too, where it is Fourier cropping / padding.
    """
    d = x.shape[-1]
    if d == box:
        return x
    if d > box:
        o = d // 2 - box // 2
        return x[..., o : o + box, o : o + box, o : o + box]
    out = torch.zeros(x.shape[:-3] + (box,) * 3, dtype=x.dtype, device=x.device)
    o = box // 2 - d // 2
    out[..., o : o + d, o : o + d, o : o + d] = x
    return out


# -- the Fourier-slice sampler ------------------------------------------------------------------------
def centred_spectrum(volumes: torch.Tensor, pad_factor: int = 2) -> torch.Tensor:
    """Centred spectrum of zero-padded volumes, as real channels ready for :func:`sample_centred`.

    Parameters
    ----------
    volumes : (..., D, D, D) float, centred at voxel D // 2
    pad_factor : the volumes are zero-padded to n = pad_factor * D before the transform

    Returns
    -------
    (..., 2, n, n, n) float32, real and imaginary parts; zero frequency at index n // 2,
    one sample per 1 / pad_factor cycles per box of the unpadded volume
    """
    pad = center_crop_or_pad(volumes.float(), pad_factor * volumes.shape[-1])
    spec = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(pad, dim=_DIMS3), dim=_DIMS3), dim=_DIMS3)
    return torch.stack([spec.real, spec.imag], dim=-4).contiguous()


def rotate_frequencies(k: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """The source frequencies ``A^T k`` of each rotation, as one matrix product.

    Parameters
    ----------
    k : (F, 3) float32 frequencies (x, y, z)
    mats : (R, 3, 3) rotation matrices A acting on (x, y, z)

    Returns
    -------
    (R, F, 3) float32, row ``[r, f]`` = ``(A_r^T k_f)^T = k_f^T A_r``
    """
    r = len(mats)
    return (k @ mats.float().permute(1, 0, 2).reshape(3, 3 * r)).view(-1, r, 3).transpose(0, 1)


def sample_centred(spec: torch.Tensor, freqs: torch.Tensor, oversampling: float = 2.0) -> torch.Tensor:
    """Trilinear samples of a centred spectrum (or any centred real map) at given frequencies.

    Parameters
    ----------
    spec : (C, n, n, n) float32 channels, zero frequency at index n // 2 (e.g. one
        item of :func:`centred_spectrum`, or an ``fftshift``-ed weight map)
    freqs : (R, F, 3) float32 frequencies (x, y, z) in cycles per box of the unpadded
        volume (e.g. from :func:`rotate_frequencies`)
    oversampling : samples per cycle per box in ``spec``: the pad factor (1 for an unpadded map)

    Returns
    -------
    (C, R, F) float32; zero outside the sampled grid
    """
    n = spec.shape[-1]
    idx = freqs * oversampling + n // 2
    grid = (idx * (2.0 / (n - 1)) - 1.0)[None, :, None]  # (1, R, 1, F, 3), align_corners=True
    return F.grid_sample(spec[None], grid, mode="bilinear", align_corners=True)[0, :, :, 0]
