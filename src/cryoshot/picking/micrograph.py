"""Micrographs for picking: read strictly, bin so the particle spans a fixed size, normalise.

Binning from the particle diameter makes every later step independent of the pixel size:
a 160 Å particle at 1 Å/px in a 4096² micrograph becomes 16 px in a 410² image, so
the scan costs the same for any detector and micrographs of different pixel sizes are
resampled onto the same scale automatically. A smooth background (ice thickness, uneven
illumination; a running median, so a carbon edge stays a step) is then subtracted, so the windows
of one micrograph are compared on one level.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cryoshot.errors import CryoshotError
from cryoshot.io.mrc import read_mrc

MIN_DIAMETER_PX = 4.0  # a particle smaller than this (input pixels) cannot be picked
# The background (ice thickness, uneven illumination), a running median over windows this many
# particle diameters wide, is subtracted before standardising; 0 keeps it. Chosen (1 against 2.5) on
# training-structure micrographs with and without an added background (docs/benchmarks.md).
FLATTEN_DIAMETERS = 1.0


@dataclass
class BinnedMicrograph:
    """A micrograph on the picker's scale.

    Attributes
    ----------
    image : (h, w) float32, robustly standardised (median 0, MAD-based sigma 1, clipped at ±5)
    factor : input pixels per binned pixel
    shape : (H, W) of the input micrograph (pixels)
    pixel_size_A : input pixel size (Å)
    """

    image: np.ndarray
    factor: float
    shape: tuple[int, int]
    pixel_size_A: float

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) binned pixel coordinates -> input pixel coordinates (pixel centres at integers)."""
        return (np.asarray(xy, dtype=np.float64) + 0.5) * self.factor - 0.5

    def to_binned(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) input pixel coordinates -> binned pixel coordinates."""
        return (np.asarray(xy, dtype=np.float64) + 0.5) / self.factor - 0.5


def _open_micrograph(path: Path, angpix: float | None, mmap: bool):
    """The checks every micrograph gets: not a stack or volume, and a pixel size; returns (MrcVolume, Å)."""
    if path.suffix.lower() == ".mrcs":
        raise CryoshotError(f"{path} is an image stack (.mrcs); pick needs micrographs, one 2D image per file")
    vol = read_mrc(path, mmap=mmap, ndim=(2, 3))
    if vol.data.ndim == 3 and vol.data.shape[0] == 1:  # one section (nz = 1), as some programs write a 2D image
        vol = replace(vol, data=vol.data[0])
    if vol.data.ndim == 3:
        what = "an image stack" if vol.is_stack else "a 3D volume"
        raise CryoshotError(
            f"{path} is {what} of shape {vol.data.shape}; pick needs 2D micrographs (motion-corrected sums), one per file"
        )
    size = angpix if angpix is not None else vol.voxel_size_A
    if size is None or not size > 0:
        raise CryoshotError(f"{path} has no pixel size in its header; pass --angpix (Å per pixel)")
    return vol, float(size)


def read_micrograph(path: str | os.PathLike, angpix: float | None = None) -> tuple[np.ndarray, float]:
    """One 2D micrograph and its pixel size (Å): the header's, or ``angpix`` when given.

    Raises
    ------
    CryoshotError
        Not a readable MRC, a 3D volume or an image stack, NaN/Inf, or no pixel size.
    """
    vol, size = _open_micrograph(Path(path), angpix, mmap=False)
    return np.asarray(vol.data, dtype=np.float32), size


def micrograph_header(path: str | os.PathLike, angpix: float | None = None) -> tuple[tuple[int, int], float]:
    """Shape (H, W) and pixel size (Å) of a 2D micrograph, from its header (the data are not read).

    Raises
    ------
    CryoshotError
        As :func:`read_micrograph`, except for NaN, which only a full read finds.
    """
    vol, size = _open_micrograph(Path(path), angpix, mmap=True)
    return (int(vol.data.shape[0]), int(vol.data.shape[1])), size


def binning_factor(diameter_A: float, pixel_size_A: float, particle_px: int, shape: tuple[int, int]) -> float:
    """Input pixels per binned pixel so that ``diameter_A`` spans ``particle_px`` pixels; checks the size."""
    d_px = diameter_A / pixel_size_A
    if d_px < MIN_DIAMETER_PX:
        raise CryoshotError(
            f"a {diameter_A:g} Å particle spans only {d_px:.1f} px at {pixel_size_A:g} Å/px; it must span at least "
            f"{MIN_DIAMETER_PX:g} px. Check --diameter (Å) and the pixel size (--angpix)"
        )
    if d_px > min(shape):
        raise CryoshotError(
            f"a {diameter_A:g} Å particle spans {d_px:.0f} px at {pixel_size_A:g} Å/px, more than the micrograph "
            f"({shape[1]} x {shape[0]} px). Check --diameter (Å, not pixels) and --angpix"
        )
    return d_px / particle_px


def robust_standardise(img: np.ndarray, clip: float = 5.0) -> np.ndarray:
    """(img - median) / (1.4826 MAD), clipped to ±``clip`` (hot pixels, ice and carbon stay bounded)."""
    sample = img.ravel()[:: max(1, img.size // 200_000)]
    med = float(np.median(sample))
    mad = float(np.median(np.abs(sample - med))) * 1.4826
    if not mad > 0:
        mad = float(sample.std()) or 1.0
    return np.clip((img - med) / mad, -clip, clip).astype(np.float32)


def bin_image(img: np.ndarray, factor: float) -> np.ndarray:
    """Resample ``img`` by 1/``factor``: block-average by the integer part, then antialiased bilinear."""
    arr = np.ascontiguousarray(img, dtype=np.float32)
    t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())[None, None]
    k = int(np.floor(factor))
    if k >= 2:
        t = F.avg_pool2d(t, k, ceil_mode=False)
    out = (max(1, round(img.shape[0] / factor)), max(1, round(img.shape[1] / factor)))
    if tuple(t.shape[-2:]) != out:
        t = F.interpolate(t, size=out, mode="bilinear", align_corners=False, antialias=factor > 1)
    return t[0, 0].numpy()


def fourier_bin(img: np.ndarray, factor: float) -> np.ndarray:
    """Resample ``img`` (H, W) by 1/``factor`` by cropping (or zero-padding) its spectrum; float32.

    A sharp low-pass at the new Nyquist frequency, as particle images are resampled elsewhere in
    cryoshot (``data.particles2d.resample_images``); pixel values keep their scale. Output pixel k
    samples input position ``k * H / h`` (the periodic DFT grid).
    """
    arr = np.ascontiguousarray(img, dtype=np.float32)
    x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    hh, ww = x.shape
    h, w = max(2, round(hh / factor)), max(2, round(ww / factor))
    f = torch.fft.rfft2(x)
    g = torch.zeros((h, w // 2 + 1), dtype=f.dtype)
    m = min(h, hh)
    pos, neg, cols = (m + 1) // 2, m // 2, min(w // 2 + 1, ww // 2 + 1)
    g[:pos, :cols] = f[:pos, :cols]
    if neg:
        g[-neg:, :cols] = f[-neg:, :cols]
    return (torch.fft.irfft2(g, s=(h, w)) * (h * w / (hh * ww))).numpy()


def _plane_removed(img: np.ndarray) -> np.ndarray:
    """``img`` (H, W) minus its least-squares plane (float32)."""
    arr = np.asarray(img, np.float64)
    h, w = arr.shape
    yy, xx = np.mgrid[:h, :w]
    a = np.c_[np.ones(h * w), (xx.ravel() - w / 2) / w, (yy.ravel() - h / 2) / h]
    coef = np.linalg.lstsq(a, arr.ravel(), rcond=None)[0]
    return (arr - (a @ coef).reshape(h, w)).astype(np.float32)


def median_background(img: np.ndarray, diameter_px: float, window_diameters: float) -> np.ndarray:
    """(H, W) background of ``img``: medians of tiles a quarter of a particle wide, a median filter over about
    ``window_diameters`` particle diameters of tiles, then bilinear interpolation between tile centres.

    Medians keep a step (a carbon edge) a step, and particles (small, a minority of each window)
    barely move them. Costs a few milliseconds for a binned micrograph.
    """
    arr = np.asarray(img, np.float32)
    h, w = arr.shape
    b = max(2, int(round(diameter_px / 4)))
    if h < b or w < b:  # smaller than one tile
        return np.full((h, w), float(np.median(arr)), np.float32)
    nh, nw = h // b, w // b
    hh, ww = nh * b, nw * b
    tiles = np.median(arr[:hh, :ww].reshape(nh, b, nw, b).transpose(0, 2, 1, 3).reshape(nh, nw, b * b), axis=2)
    n = max(3, int(round(window_diameters * diameter_px / b)) | 1)
    tiles = ndimage.median_filter(tiles, size=n, mode="reflect")
    t = torch.from_numpy(np.ascontiguousarray(tiles, np.float32))[None, None]
    up = F.interpolate(t, size=(hh, ww), mode="bilinear", align_corners=False)
    up = F.pad(up, (0, w - ww, 0, h - hh), mode="replicate")
    return up[0, 0].numpy()


def flatten_background(img: np.ndarray, diameter_px: float) -> np.ndarray:
    """``img`` (H, W) with its smooth background (ice thickness, illumination) removed: the
    least-squares plane, then :func:`median_background` over :data:`FLATTEN_DIAMETERS` particle
    diameters (``diameter_px`` pixels each); 0 diameters returns ``img`` unchanged."""
    if FLATTEN_DIAMETERS <= 0:
        return img
    arr = _plane_removed(img)
    return arr - median_background(arr, diameter_px, FLATTEN_DIAMETERS)


def bin_micrograph(img: np.ndarray, pixel_size_A: float, diameter_A: float, particle_px: int) -> BinnedMicrograph:
    """Bin ``img`` so the particle spans ``particle_px`` pixels, flatten its background
    (:data:`FLATTEN_DIAMETERS`), then standardise it robustly."""
    factor = binning_factor(diameter_A, pixel_size_A, particle_px, img.shape)
    binned = robust_standardise(flatten_background(bin_image(img, factor), particle_px))
    # the exact factor of the integer output grid (differs from ``factor`` by rounding)
    eff = img.shape[1] / binned.shape[1]
    return BinnedMicrograph(binned, float(eff), (int(img.shape[0]), int(img.shape[1])), float(pixel_size_A))
