"""Noise at a target SNR, with the convention documented.

Conventions
-----------
``box`` (default, the convention of the ProtoNet-CE and FSCC papers):
    SNR = var(filtered signal) / var(noise), both taken over the whole box after
    the same imaging filters (missing wedge, reconstruction). The noise is scaled
    per item so every item meets the target exactly; ``--save-clean`` writes the
    filtered signal so anyone can check: var(clean) / var(noisy - clean) == SNR.
``projection``:
    SNR = var(p) / sigma_p^2 per tilt image, where p is the 0-degree projection of
    the particle (CTF and dose applied, over the whole box) and sigma_p^2 the
    variance of the white noise added to every tilt image before reconstruction.
    In the fast path the reconstructed noise is white noise filtered by the
    reconstruction's noise power spectrum, scaled by sigma_p^2 / D (Parseval on
    the Fourier-slice geometry); the tilt-series path adds the noise to each
    tilt image for real.
"""

from __future__ import annotations

import math

import torch

from cryoshot.errors import CryoshotError

SNR_CONVENTIONS = ("box", "projection")


def box_noise_scale(signal: torch.Tensor, noise: torch.Tensor, snr: float) -> torch.Tensor:
    """Per-item factor ``a`` with var(signal) / var(a * noise) == snr.

    Parameters
    ----------
    signal, noise : (B, ...) tensors
    snr : target, > 0

    Returns
    -------
    (B,) tensor
    """
    dims = tuple(range(1, signal.ndim))
    vs = signal.var(dim=dims, unbiased=False)
    vn = noise.var(dim=dims, unbiased=False).clamp_min(1e-30)
    return torch.sqrt(vs / (snr * vn))


def check_snr(snr: float) -> None:
    """Raise a clear error unless ``snr`` is a positive finite number."""
    if not (snr > 0 and math.isfinite(snr)):
        raise CryoshotError(f"SNR must be positive, got {snr}")
