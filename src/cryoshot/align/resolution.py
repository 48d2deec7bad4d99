"""Fourier shell correlation and resolution (FSC via ``torch-fourier-shell-correlation``)."""

from __future__ import annotations

import numpy as np
import torch
from torch_fourier_shell_correlation import fourier_shell_correlation


def fsc_curve(
    a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, pixel_A: float
) -> tuple[np.ndarray, np.ndarray]:
    """FSC between two (D, D, D) maps; returns shell frequencies (1/Å) and FSC values, each (D//2+1,)."""
    a, b = torch.as_tensor(np.asarray(a, np.float32)), torch.as_tensor(np.asarray(b, np.float32))
    fsc = fourier_shell_correlation(a, b).numpy().astype(np.float64)
    d = a.shape[-1]
    freq = np.arange(len(fsc)) / (d * pixel_A)
    return freq, fsc


def resolution_at(freq_per_A: np.ndarray, fsc: np.ndarray, threshold: float = 0.143) -> float:
    """Resolution (Å) where the FSC first falls below ``threshold`` (linear interpolation).

    Shell 0 is ignored. If the FSC never falls below it, the Nyquist resolution is returned.
    """
    for i in range(1, len(fsc)):
        if fsc[i] < threshold:
            f0, f1, c0, c1 = freq_per_A[i - 1], freq_per_A[i], fsc[i - 1], fsc[i]
            f = f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0) if c0 != c1 else f1
            return float(1.0 / f) if f > 0 else float("inf")
    return float(1.0 / freq_per_A[-1])


def soft_sphere_mask(box: int, radius_px: float | None = None, edge_px: float = 3.0) -> torch.Tensor:
    """Spherical mask centred on voxel ``box // 2`` with a raised-cosine edge, (D, D, D) float32."""
    r0 = box / 2 - edge_px - 1 if radius_px is None else radius_px
    g = torch.arange(box, dtype=torch.float32) - box // 2
    r = torch.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    t = ((r - r0) / edge_px).clamp(0, 1)
    return 0.5 * (1 + torch.cos(np.pi * t))
