"""Preparing 2D particle images for an embedding network: the same steps in training and use.

1. **Resample** to the network's grid (pixel size and box): Fourier cropping or padding
   to the target pixel size, then a centred crop or pad of the box.
2. **Phase flip** with each image's CTF when the defocus is known (sign of the CTF, so
   the contrast of every frequency band agrees between images of different defocus).
3. **Standardise**: zero mean and unit variance over a disc of radius 0.45 box (the
   corners carry only noise and neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cryoshot.errors import CryoshotError
from cryoshot.simulate.optics import Microscope, ctf_2d_batch


@dataclass
class CTFParams:
    """Per-image CTF parameters (RELION's units converted: µm, degrees, kV, mm).

    Attributes
    ----------
    defocus_u_um, defocus_v_um, angle_deg : (N,) arrays
    voltage_kv, cs_mm, amplitude_contrast : (N,) arrays (optics groups may differ)
    """

    defocus_u_um: np.ndarray
    defocus_v_um: np.ndarray
    angle_deg: np.ndarray
    voltage_kv: np.ndarray
    cs_mm: np.ndarray
    amplitude_contrast: np.ndarray

    def subset(self, idx: np.ndarray) -> CTFParams:
        return CTFParams(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def resample_images(images: np.ndarray, pixel_size_A: float, box: int, target_pixel_A: float) -> np.ndarray:
    """Resample (N, D, D) images from ``pixel_size_A`` to ``target_pixel_A`` and a ``box`` x ``box`` frame.

    Fourier cropping (coarser) or zero-padding (finer) keeps the physical scale; the
    centre pixel D // 2 stays the centre. Returns float32 (N, box, box).
    """
    x = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32))
    n, d = x.shape[0], x.shape[-1]
    if x.shape[-2] != d:
        raise CryoshotError(f"images must be square, got {tuple(x.shape[1:])}")
    if abs(pixel_size_A - target_pixel_A) > 1e-4 * target_pixel_A:
        m = int(round(d * pixel_size_A / target_pixel_A))
        m = max(m + (m % 2), 8)  # even sizes keep the centre convention simple
        f = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1))), dim=(-2, -1))
        c, h = d // 2, m // 2
        if m <= d:
            f = f[:, c - h : c - h + m, c - h : c - h + m]
        else:
            g = torch.zeros((n, m, m), dtype=f.dtype)
            g[:, h - c : h - c + d, h - c : h - c + d] = f
            f = g
        x = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(f, dim=(-2, -1))), dim=(-2, -1)).real
        x = x * (m * m) / (d * d)  # keep pixel values on the same scale
        d = m
    if d != box:
        out = torch.zeros((n, box, box), dtype=x.dtype)
        if d > box:
            o = d // 2 - box // 2
            out = x[:, o : o + box, o : o + box]
        else:
            o = box // 2 - d // 2
            out[:, o : o + d, o : o + d] = x
        x = out
    return x.contiguous().numpy().astype(np.float32, copy=False)


def phase_flip(images: np.ndarray, pixel_size_A: float, ctf: CTFParams) -> np.ndarray:
    """Multiply each image's spectrum by the sign of its CTF (protein bright). (N, D, D) float32."""
    x = torch.as_tensor(np.ascontiguousarray(images, dtype=np.float32))
    d = x.shape[-1]
    out = torch.empty_like(x)
    groups = np.stack([ctf.voltage_kv, ctf.cs_mm, ctf.amplitude_contrast], 1)
    for g in np.unique(groups, axis=0):
        sel = np.nonzero((groups == g).all(1))[0]
        mic = Microscope(voltage_kv=float(g[0]), cs_mm=float(g[1]), amplitude_contrast=float(g[2]))
        for s in range(0, len(sel), 1024):
            b = sel[s : s + 1024]
            c = ctf_2d_batch(d, pixel_size_A, ctf.defocus_u_um[b], ctf.defocus_v_um[b], ctf.angle_deg[b], mic)
            f = torch.fft.rfft2(x[b]) * torch.from_numpy(np.sign(c))
            out[b] = torch.fft.irfft2(f, s=(d, d))
    return out.numpy()


def disc_mask(box: int, radius_frac: float = 0.45) -> np.ndarray:
    """(D, D) bool: pixels within ``radius_frac * D`` of the centre pixel D // 2."""
    y, x = np.mgrid[:box, :box] - box // 2
    return (x**2 + y**2) <= (radius_frac * box) ** 2


def standardise(images: np.ndarray, radius_frac: float = 0.45) -> np.ndarray:
    """Zero mean, unit variance over the central disc of each image; (N, D, D) float32."""
    x = np.asarray(images, dtype=np.float32)
    m = disc_mask(x.shape[-1], radius_frac)
    inside = x[:, m]
    mu = inside.mean(1)[:, None, None]
    sd = inside.std(1)[:, None, None]
    return ((x - mu) / np.maximum(sd, 1e-6)).astype(np.float32)


def prepare_images(
    images: np.ndarray,
    pixel_size_A: float,
    box: int,
    target_pixel_A: float,
    ctf: CTFParams | None = None,
) -> np.ndarray:
    """Phase flip (when ``ctf`` is given), resample to the network's grid, standardise.

    Parameters
    ----------
    images : (N, D, D) float32, protein bright
    pixel_size_A : their pixel size (Å)
    box, target_pixel_A : the network's grid
    ctf : per-image CTF parameters, or None to skip phase flipping

    Returns
    -------
    (N, box, box) float32
    """
    x = np.asarray(images, dtype=np.float32)
    if ctf is not None:
        x = phase_flip(x, pixel_size_A, ctf)
    x = resample_images(x, pixel_size_A, box, target_pixel_A)
    return standardise(x)
