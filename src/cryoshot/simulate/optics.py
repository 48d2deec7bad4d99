"""Contrast transfer, dose weighting and the 3D transfer function of a tilt series.

Sign convention: cryoshot simulates protein *bright* (positive) by default, so the
CTF here is the negative of the textbook one,
``ctf(k) = sqrt(1 - A^2) sin(chi) + A cos(chi) = sin(chi + asin(A))`` with
``chi(k) = pi * lambda * df * k^2 - pi/2 * Cs * lambda^3 * k^4`` (df > 0 is
underfocus), which is positive at low frequency. ``--invert`` flips the output.

The 3D transfer function of a subtomogram follows the Fourier-slice theorem: tilt
``t`` measures a central plane of Fourier space normal to its beam direction
``n_t``. Each plane is spread over one voxel with a linear profile
``S_t(k) = max(0, 1 - |k . n_t|)`` (k in cycles per box), so voxels farther than
one voxel from every plane -- the missing wedge -- get exactly zero. A voxel's
signal transfer is ``sum_t S_t ctf_t dose_t / max(sum_t S_t, 1)`` (the weighted
average over the planes that pass through it, as a weighted back-projection
gives), and the noise that the same reconstruction passes has power spectrum
``sum_t S_t^2 / max(sum_t S_t, 1)^2`` for independent noise in each tilt image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cryoshot.utils.fourier import rfft_freqs_2d, rfft_freqs_3d  # noqa: F401  (one definition, re-exported)


def check_imaging(defocus_min_um: float, defocus_max_um: float, amplitude_contrast: float) -> None:
    """Raise a clear error for an impossible defocus range or amplitude contrast."""
    from cryoshot.errors import CryoshotError

    if not 0 < defocus_min_um <= defocus_max_um:
        raise CryoshotError(f"defocus range must satisfy 0 < min <= max, got {defocus_min_um}..{defocus_max_um} µm")
    if not 0 <= amplitude_contrast < 1:
        raise CryoshotError(f"amplitude contrast must be in [0, 1), got {amplitude_contrast}")


def electron_wavelength_A(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    v = voltage_kv * 1e3
    return 12.2643247 / np.sqrt(v * (1.0 + 0.978466e-6 * v))


@dataclass(frozen=True)
class Microscope:
    """Imaging constants, one set of defaults shared by every simulator (nested in each simulator's config).

    Attributes
    ----------
    voltage_kv : acceleration voltage (kV)
    cs_mm : spherical aberration (mm)
    amplitude_contrast : fraction of amplitude contrast (0-1)
    b_factor_A2 : Gaussian envelope B-factor (Å^2), exp(-B k^2 / 4)
    """

    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    b_factor_A2: float = 0.0

    def validate(self) -> None:
        """Raise a clear error for a value no microscope has."""
        from cryoshot.errors import CryoshotError

        if not 0 < self.voltage_kv <= 3000:
            raise CryoshotError(f"voltage must be in (0, 3000] kV, got {self.voltage_kv}")
        if not 0 <= self.cs_mm <= 100:
            raise CryoshotError(f"spherical aberration must be in [0, 100] mm, got {self.cs_mm}")
        if not 0 <= self.amplitude_contrast < 1:
            raise CryoshotError(f"amplitude contrast must be in [0, 1), got {self.amplitude_contrast}")
        if not 0 <= self.b_factor_A2 <= 10_000:
            raise CryoshotError(f"B-factor must be in [0, 10000] Å², got {self.b_factor_A2}")


@dataclass(frozen=True)
class TiltScheme:
    """A tilt series: angles (degrees, about the y axis) and electron exposure.

    The acquisition order is dose-symmetric (Hagen): 0, +step, -step, -2 step,
    +2 step, ...; ``dose_e_per_A2`` is the total exposure split evenly.
    """

    tilt_min_deg: float = -60.0
    tilt_max_deg: float = 60.0
    tilt_step_deg: float = 3.0
    dose_e_per_A2: float = 120.0

    def angles_deg(self) -> np.ndarray:
        n = int(round((self.tilt_max_deg - self.tilt_min_deg) / self.tilt_step_deg)) + 1
        return np.linspace(self.tilt_min_deg, self.tilt_max_deg, n)

    def prior_dose(self) -> np.ndarray:
        """Exposure (e/Å^2) each tilt received before its own mid-exposure, per angle."""
        ang = self.angles_deg()
        # dose-symmetric order: by |angle|, positive before negative at each pair
        order = np.lexsort((-np.sign(ang), np.abs(ang)))
        per_tilt = self.dose_e_per_A2 / len(ang)
        rank = np.empty(len(ang))
        rank[order] = np.arange(len(ang))
        return (rank + 0.5) * per_tilt


def ctf(k_A: np.ndarray, defocus_um: float, mic: Microscope) -> np.ndarray:
    """Bright-protein CTF (see module docstring) at spatial frequency ``k_A`` (1/Å)."""
    lam = electron_wavelength_A(mic.voltage_kv)
    df = defocus_um * 1e4
    cs = mic.cs_mm * 1e7
    k2 = k_A**2
    chi = np.pi * lam * df * k2 - 0.5 * np.pi * cs * lam**3 * k2**2
    out = np.sin(chi + np.arcsin(mic.amplitude_contrast))
    if mic.b_factor_A2:
        out = out * np.exp(-mic.b_factor_A2 * k2 / 4.0)
    return out


def dose_filter(k_A: np.ndarray, dose_e_per_A2: float | np.ndarray) -> np.ndarray:
    """Radiation-damage attenuation (Grant & Grigorieff 2015) after a given exposure."""
    k = np.maximum(k_A, 1e-6)
    critical = 0.245 * k**-1.665 + 2.81
    return np.exp(-np.asarray(dose_e_per_A2) / (2.0 * critical))


@dataclass(frozen=True)
class TransferFunction3D:
    """Signal transfer and noise power of a subtomogram, on the ``rfftn`` grid.

    Attributes
    ----------
    signal : (D, D, D//2+1) float32, multiplies the signal's Fourier transform
    noise_psd : (D, D, D//2+1) float32, power spectrum of reconstructed per-tilt white noise
        (unit per-tilt variance, up to the factor 1/D; see noise.py)
    measured : (D, D, D//2+1) bool, False inside the missing wedge
    """

    signal: np.ndarray
    noise_psd: np.ndarray
    measured: np.ndarray


def _tilt_profiles(box: int, scheme: TiltScheme) -> tuple[np.ndarray, np.ndarray]:
    kz, ky, kx = rfft_freqs_3d(box)
    ang = np.deg2rad(scheme.angles_deg())
    # beam direction of tilt t in (x, y, z): rotation about y
    dist = np.abs(kx[None] * np.sin(ang)[:, None, None, None] + kz[None] * np.cos(ang)[:, None, None, None])
    return np.clip(1.0 - dist, 0.0, None), np.sqrt(kx**2 + ky**2 + kz**2)


@lru_cache(maxsize=64)
def _geometry(
    box: int, pixel_size_A: float, scheme: TiltScheme, use_dose: bool, use_wedge: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Defocus-independent parts: (dose-weighted plane average, noise PSD, measured, |k| in 1/Å)."""
    if use_wedge:
        profiles, k_idx = _tilt_profiles(box, scheme)
        doses = scheme.prior_dose()
    else:
        kz, ky, kx = rfft_freqs_3d(box)
        k_idx = np.sqrt(kx**2 + ky**2 + kz**2)
        profiles = np.ones((1,) + k_idx.shape)
        doses = np.array([scheme.dose_e_per_A2 / max(len(scheme.angles_deg()), 1) / 2])
    k_A = k_idx / (box * pixel_size_A)
    total = profiles.sum(0)
    norm = np.maximum(total, 1.0)
    if use_dose:
        weighted = sum(p * dose_filter(k_A, d) for p, d in zip(profiles, doses, strict=True))
    else:
        weighted = total
    noise_psd = (profiles**2).sum(0) / norm**2
    return weighted / norm, noise_psd.astype(np.float32), total > 0, k_A


@lru_cache(maxsize=512)
def transfer_function_3d(
    box: int,
    pixel_size_A: float,
    defocus_um: float,
    scheme: TiltScheme = TiltScheme(),
    mic: Microscope = Microscope(),
    use_ctf: bool = True,
    use_dose: bool = True,
    use_wedge: bool = True,
) -> TransferFunction3D:
    """3D transfer function for one defocus (cached: built once per defocus).

    The CTF is the same for every tilt (the particle sits at one height), so the
    signal transfer factorises into ``ctf(|k|)`` times a defocus-independent part.
    With ``use_wedge=False`` Fourier space is fully measured (one virtual tilt).
    """
    avg, noise_psd, measured, k_A = _geometry(box, pixel_size_A, scheme, use_dose, use_wedge)
    c = ctf(k_A, defocus_um, mic) if use_ctf else 1.0
    return TransferFunction3D(signal=(c * avg).astype(np.float32), noise_psd=noise_psd, measured=measured)


def detector_mtf_2d(shape: tuple[int, int], mtf_nyquist: float) -> np.ndarray:
    """A detector's MTF on the ``rfft2`` grid of an (H, W) image: Gaussian, 1 at zero frequency and
    ``mtf_nyquist`` at Nyquist (a counting detector's is about 0.6; 1: a perfect detector).

    Returns
    -------
    (H, W//2+1) float32
    """
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(np.log(mtf_nyquist) * (kx**2 + ky**2) / 0.25).astype(np.float32)


def ctf_2d(box: int, pixel_size_A: float, defocus_um: float, mic: Microscope = Microscope()) -> np.ndarray:
    """Bright-protein CTF on the ``rfft2`` grid of a (D, D) image, shape (D, D//2+1)."""
    ky, kx = rfft_freqs_2d(box)
    return ctf(np.sqrt(kx**2 + ky**2) / (box * pixel_size_A), defocus_um, mic).astype(np.float32)


def ctf_2d_batch(
    box: int,
    pixel_size_A: float,
    defocus_u_um: np.ndarray,
    defocus_v_um: np.ndarray | None = None,
    astig_angle_deg: np.ndarray | None = None,
    mic: Microscope = Microscope(),
) -> np.ndarray:
    """Bright-protein CTFs of a batch of (D, D) images on the ``rfft2`` grid, with astigmatism.

    RELION's convention: the defocus along direction θ (from +x) is
    ``(dU + dV)/2 + (dU - dV)/2 cos(2 (θ - angle))``.

    Parameters
    ----------
    defocus_u_um, defocus_v_um : (B,) defocus in µm (underfocus > 0); V defaults to U
    astig_angle_deg : (B,) azimuth of U in degrees (default 0)

    Returns
    -------
    (B, D, D//2+1) float32
    """
    du = np.asarray(defocus_u_um, dtype=np.float64).reshape(-1)
    dv = du if defocus_v_um is None else np.asarray(defocus_v_um, dtype=np.float64).reshape(-1)
    ang = np.zeros_like(du) if astig_angle_deg is None else np.deg2rad(np.asarray(astig_angle_deg, float)).reshape(-1)
    ky, kx = rfft_freqs_2d(box)
    k = np.sqrt(kx**2 + ky**2) / (box * pixel_size_A)
    theta = np.arctan2(ky, kx)
    df = 0.5 * (du + dv)[:, None, None] + 0.5 * (du - dv)[:, None, None] * np.cos(
        2 * (theta[None] - ang[:, None, None])
    )
    lam = electron_wavelength_A(mic.voltage_kv)
    k2 = (k**2)[None]
    chi = np.pi * lam * df * 1e4 * k2 - 0.5 * np.pi * mic.cs_mm * 1e7 * lam**3 * k2**2
    out = np.sin(chi + np.arcsin(mic.amplitude_contrast))
    if mic.b_factor_A2:
        out = out * np.exp(-mic.b_factor_A2 * k2 / 4.0)
    return out.astype(np.float32)
