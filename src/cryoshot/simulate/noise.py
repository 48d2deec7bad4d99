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


def check_detector(structural_noise: float, mtf_nyquist: float) -> None:
    """Raise a clear error unless 0 <= ``structural_noise`` <= 1 and 0 < ``mtf_nyquist`` <= 1."""
    if not 0 <= structural_noise <= 1:
        raise CryoshotError(f"the structural share of the noise must be in [0, 1], got {structural_noise}")
    if not 0 < mtf_nyquist <= 1:
        raise CryoshotError(f"the detector MTF at Nyquist must be in (0, 1], got {mtf_nyquist}")


def mix_structural(white: torch.Tensor, structural: torch.Tensor, fraction: float) -> torch.Tensor:
    """Noise whose variance is ``fraction`` structural and ``1 - fraction`` white, unit variance per item.

    Real images carry two noises: shot noise, white before the detector, and the structural
    noise of the ice and the solvent around the particle, which the microscope images like the
    particle (through the same CTF). ``structural`` is white noise already filtered by that CTF.

    Parameters
    ----------
    white, structural : (B, H, W) tensors
    fraction : share of the variance that is structural, in [0, 1]

    Returns
    -------
    (B, H, W) tensor
    """

    def unit(x: torch.Tensor) -> torch.Tensor:
        return x / x.std(dim=(-2, -1), keepdim=True).clamp_min(1e-30)

    return math.sqrt(1.0 - fraction) * unit(white) + math.sqrt(fraction) * unit(structural)


def power_law_field(rng, shape: tuple[int, int], exponent: float, k_min: float) -> torch.Tensor:
    """A zero-mean Gaussian random field with a power-law amplitude spectrum, unit variance.

    Amorphous ice is not white: its thickness and density vary over every length, so the phase
    it adds has most power at low frequencies (an amplitude spectrum near 1/k). Imaged through
    the CTF like a particle, it puts particle-sized bumps and rings all over a micrograph.

    Parameters
    ----------
    rng : numpy Generator
    shape : (H, W) pixels
    exponent : amplitude ~ 1 / max(k, k_min)^exponent (0: white)
    k_min : spatial frequency (1/px) below which the spectrum is flat, so scales beyond
        1 / k_min (which a picker's background removal takes away anyway) do not dominate

    Returns
    -------
    (H, W) float32 tensor
    """
    h, w = shape
    ky = torch.fft.fftfreq(h)[:, None]
    kx = torch.fft.rfftfreq(w)[None, :]
    amp = torch.hypot(kx, ky).clamp_min(k_min) ** -exponent
    spec = torch.from_numpy(rng.standard_normal((2, h, w // 2 + 1)).astype("float32"))
    f = torch.complex(spec[0], spec[1]) * amp
    f[0, 0] = 0
    g = torch.fft.irfft2(f, s=(h, w))
    return g / g.std().clamp_min(1e-30)
