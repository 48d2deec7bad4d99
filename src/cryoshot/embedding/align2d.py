"""In-plane alignment of 2D images: rotation and shift search by FFT cross-correlation.

Convention: an image ``x`` aligned to reference ``r`` with angle θ and shift s means
``x ≈ shift(rotate(r, θ), s)``: ``r`` rotated counter-clockwise by θ (degrees, about pixel
D // 2), then moved by s = (sx, sy) pixels. :func:`apply_alignment` undoes it, bringing
``x`` onto ``r``'s frame. The search rotates the references (K x R copies) and correlates
every image with each copy, keeping shifts within ``max_shift_px``: for small shift ranges
directly (a convolution of the periodically padded images with the rotated references, much
faster on a CPU than a full FFT correlation of which only a few values are used), else by FFT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def rotate_images(x: torch.Tensor, angles_deg: torch.Tensor | float) -> torch.Tensor:
    """Rotate (N, D, D) images counter-clockwise by ``angles_deg`` (N,) about pixel D // 2 (bilinear)."""
    n, d = x.shape[0], x.shape[-1]
    if n == 0:
        return x.float().clone()
    a = torch.as_tensor(angles_deg, dtype=torch.float32).expand(n) * (math.pi / 180)
    cos, sin = torch.cos(a), torch.sin(a)
    # output pixel p samples the input at R(-θ)(p - c) + c, c = D // 2; as an affine map of grid_sample's
    # normalised coordinates u = p / h - 1 (h = (D - 1) / 2): u -> R u + (R - I) v, v = (h - c) / h on both axes
    h = (d - 1) / 2
    v = (h - d // 2) / h
    theta = torch.stack([torch.stack([cos, sin, (cos - 1 + sin) * v], 1),
                         torch.stack([-sin, cos, (cos - 1 - sin) * v], 1)], 1)  # fmt: skip
    grid = F.affine_grid(theta, [n, 1, d, d], align_corners=True)
    return F.grid_sample(x[:, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]


def shift_images(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Move (N, D, D) images by (N, 2) shifts (sx, sy) in pixels, periodically (the Fourier phase ramp).

    Whole-pixel shifts (what the alignment search finds) are exact circular moves, done by indexing;
    others by the phase ramp, separable in x and y.
    """
    n, d = x.shape[0], x.shape[-1]
    s = torch.as_tensor(shifts, dtype=torch.float32).reshape(n, 2)
    whole = torch.round(s)
    if torch.equal(whole, s):
        i = torch.arange(d)
        iy = (i[None, :] - whole[:, 1, None].long()) % d  # (N, D): output row y reads input row y - sy
        ix = (i[None, :] - whole[:, 0, None].long()) % d
        return x.float()[torch.arange(n)[:, None, None], iy[:, :, None], ix[:, None, :]]
    px = torch.exp(-2j * math.pi * torch.fft.rfftfreq(d)[None] * s[:, 0, None])  # (N, D // 2 + 1)
    py = torch.exp(-2j * math.pi * torch.fft.fftfreq(d)[None] * s[:, 1, None])  # (N, D)
    return torch.fft.irfft2(torch.fft.rfft2(x.float()) * (py[:, :, None] * px[:, None, :]), s=(d, d))


def apply_alignment(x: torch.Tensor, angles_deg: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Bring images onto their reference's frame: undo the shift, then the rotation. (N, D, D).

    The shift is periodic, as the search's correlation is. (One bilinear resampling for both,
    with zeros outside the image, was tried: the zero strips it leaves at shifted edges made
    MRA from random subsets lock onto shift patterns on a toy set, ARI 0.03 instead of 1.0.)
    """
    return rotate_images(shift_images(x, -torch.as_tensor(shifts, dtype=torch.float32)), -torch.as_tensor(angles_deg))


@dataclass
class Alignment:
    """Best reference, angle (degrees), shift (N, 2) pixels and normalised correlation of each image.

    ``candidates`` (N, m) and ``candidate_angle_deg`` (N, m): from :func:`align_to_references`, the
    m best references of each image (``top_references=m``, default 1) and the best angle for each,
    for a finer search among them.
    """

    ref: np.ndarray
    angle_deg: np.ndarray
    shift_px: np.ndarray
    score: np.ndarray
    candidates: np.ndarray | None = None
    candidate_angle_deg: np.ndarray | None = None


DIRECT_MAX_SHIFTS = 121  # up to ±5 px: direct correlation, 4-20x faster than FFT here (docs/benchmarks.md)


def _circular_pad(x: torch.Tensor, s: int) -> torch.Tensor:
    """(N, D, D) -> (N, 1, D + 2s, D + 2s), wrapped around as the FFT's periodic shifts are."""
    return F.pad(x[:, None], (s, s, s, s), mode="circular")


def _rotated_references(r: torch.Tensor, n_angles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The angles (R,) in degrees and the unit-norm rotated references (K*R, D, D), reference-major."""
    k = r.shape[0]
    angles = torch.arange(n_angles, dtype=torch.float32) * (360.0 / n_angles)
    rot = rotate_images(r.repeat_interleave(n_angles, 0), angles.repeat(k))
    return angles, rot / rot.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]


def _best_try(cc: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best of (b, tries, shifts) correlations, shifts ordered ty * (2s + 1) + tx for ty, tx in -s..s.

    Returns the best try (b,), its shift (b, 2) as (sx, sy), its correlation (b,), and every try's
    best correlation over shifts (b, tries).
    """
    side = 2 * s + 1
    val, pos = cc.max(dim=2)
    best, j = val.max(dim=1)
    p = pos.gather(1, j[:, None])[:, 0]
    return j, torch.stack([p % side - s, p // side - s], 1).float(), best, val


def align_to_references(
    images: np.ndarray | torch.Tensor,
    refs: np.ndarray | torch.Tensor,
    *,
    n_angles: int = 36,
    max_shift_px: int = 4,
    chunk: int = 128,
    top_references: int = 1,
) -> Alignment:
    """Align every image to its best reference over in-plane rotations and shifts.

    Parameters
    ----------
    images : (N, D, D) float
    refs : (K, D, D) float
    n_angles : rotations searched, 360 / n_angles degrees apart
    max_shift_px : largest shift searched along x and y (pixels)
    top_references : also keep each image's best this many references and their best angles

    Returns
    -------
    Alignment; ``score`` is the cross-correlation divided by both norms (cosine similarity).
    """
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    r = torch.as_tensor(np.asarray(refs, dtype=np.float32))
    n, d, k = x.shape[0], x.shape[-1], r.shape[0]
    angles, rot = _rotated_references(r, n_angles)  # (K*R, D, D)
    s = int(max_shift_px)
    direct = (2 * s + 1) ** 2 <= DIRECT_MAX_SHIFTS
    if direct:  # a few shifts: a convolution of the circularly padded images with the rotated references
        weight = rot[:, None].contiguous()
    else:  # many shifts: the whole cross-correlation by FFT
        fr = torch.conj(torch.fft.rfft2(rot))
        idx = torch.arange(-s, s + 1) % d  # shifts -s..s on the periodic grid
    best = torch.empty(n, dtype=torch.long)
    best_shift = torch.empty((n, 2), dtype=torch.float32)
    best_score = torch.empty(n, dtype=torch.float32)
    m = max(1, min(int(top_references), k))
    cand = torch.empty((n, m), dtype=torch.long)
    cand_angle = torch.empty((n, m), dtype=torch.long)
    for a in range(0, n, chunk):
        xb = x[a : a + chunk]
        norms = xb.flatten(1).norm(dim=1).clamp_min(1e-12)
        if direct:  # cc[t] = sum_p x(p + t) r(p), the same periodic correlation as the FFT path
            flat = F.conv2d(_circular_pad(xb, s), weight).flatten(2)  # (b, K*R, shifts): [.., ty * side + tx]
        else:
            cc = torch.fft.irfft2(torch.fft.rfft2(xb)[:, None] * fr[None], s=(d, d))  # (b, K*R, D, D)
            flat = cc[:, :, idx][:, :, :, idx].flatten(2)  # (b, K*R, shifts): [.., ty, tx]
        j, best_shift[a : a + chunk], v2, val = _best_try(flat, s)
        # each reference's best angle, then the m best references
        per_ref, ang = val.reshape(len(xb), k, n_angles).max(dim=2)
        top = per_ref.topk(m, dim=1).indices
        cand[a : a + chunk], cand_angle[a : a + chunk] = top, ang.gather(1, top)
        best[a : a + chunk] = j
        best_score[a : a + chunk] = v2 / norms
    return Alignment(
        ref=(best // n_angles).numpy(),
        angle_deg=angles[best % n_angles].numpy(),
        shift_px=best_shift.numpy(),
        score=best_score.numpy(),
        candidates=cand.numpy(),
        candidate_angle_deg=angles[cand_angle].numpy(),
    )


def align_locally(
    images: np.ndarray | torch.Tensor,
    refs: np.ndarray | torch.Tensor,
    candidates: np.ndarray,
    candidate_angle_deg: np.ndarray,
    *,
    n_angles: int = 72,
    angle_steps: int = 1,
    max_shift_px: int = 4,
    chunk: int = 64,
) -> Alignment:
    """Align each image to a few candidate references near candidate angles (the fine step of a
    coarse-to-fine search).

    Parameters
    ----------
    images : (N, D, D) float
    refs : (K, D, D) float
    candidates : (N, m) reference indices per image (from a coarse search)
    candidate_angle_deg : (N, m) the coarse angle found for each candidate
    n_angles : the fine angular grid, 360 / n_angles degrees apart
    angle_steps : fine angles searched on each side of the candidate angle
    max_shift_px : every shift within ±this is searched (pixels)
    """
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    r = torch.as_tensor(np.asarray(refs, dtype=np.float32))
    n, d, k = x.shape[0], x.shape[-1], r.shape[0]
    step = 360.0 / n_angles
    angles, rot = _rotated_references(r, n_angles)
    rot = rot.reshape(k * n_angles, d * d)
    cand = torch.as_tensor(candidates, dtype=torch.long)
    a0 = torch.round(torch.as_tensor(candidate_angle_deg, dtype=torch.float32) / step).long()
    offs = torch.arange(-angle_steps, angle_steps + 1)
    ang = (a0[:, :, None] + offs) % n_angles  # (N, m, 2j+1)
    idx = (cand[:, :, None] * n_angles + ang).reshape(n, -1)  # rows of ``rot`` to try, per image
    s = int(max_shift_px)
    best_i = torch.empty(n, dtype=torch.long)
    best_shift = torch.empty((n, 2), dtype=torch.float32)
    best_score = torch.empty(n, dtype=torch.float32)
    for a in range(0, n, chunk):
        xb = x[a : a + chunk]
        norms = xb.flatten(1).norm(dim=1).clamp_min(1e-12)
        b, tries = len(xb), idx.shape[1]
        # one group per image: its padded copy correlated with its own tries -> (b, tries, shifts)
        w_ = rot[idx[a : a + chunk]].reshape(b * tries, 1, d, d)
        cc = F.conv2d(_circular_pad(xb, s).reshape(1, b, d + 2 * s, d + 2 * s), w_, groups=b).reshape(b, tries, -1)
        j, best_shift[a : a + chunk], v2, _ = _best_try(cc, s)
        best_i[a : a + chunk] = idx[a : a + chunk].gather(1, j[:, None])[:, 0]
        best_score[a : a + chunk] = v2 / norms
    return Alignment(
        ref=(best_i // n_angles).numpy(),
        angle_deg=angles[best_i % n_angles].numpy(),
        shift_px=best_shift.numpy(),
        score=best_score.numpy(),
    )


def lowpass(x: torch.Tensor, cutoff_frac: float) -> torch.Tensor:
    """Gaussian low-pass of (N, D, D) images: amplitude 0.5 at ``cutoff_frac`` of Nyquist."""
    d = x.shape[-1]
    ky = torch.fft.fftfreq(d)[:, None]
    kx = torch.fft.rfftfreq(d)[None, :]
    k2 = (kx**2 + ky**2) / 0.25  # (fraction of Nyquist)^2
    g = torch.exp(-math.log(2) * k2 / cutoff_frac**2)
    return torch.fft.irfft2(torch.fft.rfft2(x.float()) * g, s=(d, d))


def centre_images(x: torch.Tensor) -> torch.Tensor:
    """Move each image's centre of (positive) mass to pixel D // 2 (references drift otherwise)."""
    d = x.shape[-1]
    w = x.clamp_min(0)
    tot = w.flatten(1).sum(1).clamp_min(1e-12)
    coords = torch.arange(d, dtype=torch.float32) - d // 2
    cx = (w.sum(1) * coords).sum(1) / tot
    cy = (w.sum(2) * coords).sum(1) / tot
    return shift_images(x, -torch.stack([cx, cy], 1))


def aligned_average(
    images: np.ndarray,
    *,
    seed_index: int = 0,
    iterations: int = 4,
    n_angles: int = 72,
    max_shift_px: int = 4,
    lowpass_frac: float = 0.5,
) -> tuple[np.ndarray, Alignment]:
    """Reference-free aligned average of one class of (N, D, D) images.

    Starts from image ``seed_index`` (for a cluster: its most typical member), aligns
    every image to the low-passed, centred reference, averages, and repeats.

    Returns
    -------
    average : (D, D) float32, unfiltered mean of the aligned images
    alignment : of each image to the final reference
    """
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    ref = x[seed_index : seed_index + 1].clone()
    avg = ref[0]
    al = None
    for _ in range(iterations):
        r = centre_images(lowpass(ref, lowpass_frac))
        al = align_to_references(x, r, n_angles=n_angles, max_shift_px=max_shift_px)
        aligned = apply_alignment(x, torch.from_numpy(al.angle_deg), torch.from_numpy(al.shift_px))
        avg = aligned.mean(0)
        ref = avg[None]
    return avg.numpy().astype(np.float32), al


def rotational_invariants(images: np.ndarray, rings: int = 16, angles: int = 64, harmonics: int = 12) -> np.ndarray:
    """Rotation-invariant features of (N, D, D) images: |angular Fourier harmonics| on polar rings.

    A rotation is a cyclic shift along angle, which changes only the phases of the angular
    harmonics, so their magnitudes (rings x harmonics values) do not change. Returns (N, rings * harmonics).
    """
    from cryoshot.models.siamese2d import polar_grid

    x = torch.as_tensor(np.asarray(images, dtype=np.float32))[:, None]
    grid = polar_grid(x.shape[-1], rings, angles, 0.95).expand(len(x), -1, -1, -1)
    polar = F.grid_sample(x, grid, mode="bilinear", align_corners=True)[:, 0]  # (N, rings, angles)
    mag = torch.fft.rfft(polar, dim=-1).abs()[..., :harmonics]
    return mag.flatten(1).numpy()
