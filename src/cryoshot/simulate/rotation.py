"""Batched rotation and shift of volumes with torch (trilinear)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def rotate_volumes(vols: torch.Tensor, mats: torch.Tensor, shifts_px: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate (actively) and shift volumes about voxel ``D // 2``.

    ``out(x) = vol(A^T (x - c - t) + c)`` with vectors ordered (x, y, z).

    Parameters
    ----------
    vols : (B, D, D, D) float, indexed (z, y, x)
    mats : (B, 3, 3) rotation matrices A acting on (x, y, z)
    shifts_px : (B, 3) shifts t in voxels (x, y, z), or None

    Returns
    -------
    (B, D, D, D) rotated volumes (zero outside the input box)
    """
    b, d = vols.shape[0], vols.shape[-1]
    c = float(d // 2)
    mats = mats.to(vols.dtype)
    if shifts_px is None:
        shifts_px = torch.zeros(b, 3, dtype=vols.dtype)
    # grid_sample with align_corners=True maps index i to -1 + 2 i / (D - 1)
    s = 2.0 / (d - 1)
    rt = mats.transpose(1, 2)
    # normalised coord u = s*(x) - 1, x = (u + 1)/s ; source = rt @ (x - c - t) + c
    # => u_src = rt @ u + [s * (c - rt @ (c + t)) + rt @ 1 - 1]
    ones = torch.ones(b, 3, 1, dtype=vols.dtype)
    cvec = torch.full((b, 3, 1), c, dtype=vols.dtype)
    trans = s * (cvec - rt @ (cvec + shifts_px.to(vols.dtype)[..., None])) + rt @ ones - ones
    theta = torch.cat([rt, trans], dim=2)
    grid = F.affine_grid(theta, (b, 1, d, d, d), align_corners=True)
    return F.grid_sample(vols[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]


def random_rotations(rng: np.random.Generator) -> np.ndarray:
    """One rotation matrix drawn uniformly on SO(3) (Haar measure)."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=rng).as_matrix()
