"""Rotation grids on SO(3) for exhaustive alignment searches.

The global grid is a super-Fibonacci spiral (Alexa, CVPR 2022): deterministic,
near-uniform unit quaternions. Its size for an angular step θ (radians) is
``ceil(8 π² / θ³)``, the usual count for an Euler-angle grid of step θ (about 550
at 30°, 1,850 at 20°, 4,400 at 15°).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from cryoshot.errors import CryoshotError

_PHI = math.sqrt(2.0)
_PSI = 1.533751168755204288118041


def check_step(step_deg: float) -> None:
    """Angular steps must be positive (and not absurdly fine)."""
    if not step_deg > 0:
        raise CryoshotError(f"the angular step must be positive, got {step_deg} degrees")
    if step_deg < 1.0:
        raise CryoshotError(f"an angular step of {step_deg} degrees gives millions of rotations; use 1 degree or more")


def grid_size(step_deg: float) -> int:
    """Number of rotations of the global grid at ``step_deg``."""
    check_step(step_deg)
    return max(1, math.ceil(8 * math.pi**2 / math.radians(step_deg) ** 3))


def so3_grid(step_deg: float) -> np.ndarray:
    """Near-uniform rotations covering SO(3) at about ``step_deg``.

    Returns
    -------
    (R, 3, 3) float64 rotation matrices
    """
    n = grid_size(step_deg)
    s = np.arange(n) + 0.5
    r, big_r = np.sqrt(s / n), np.sqrt(1.0 - s / n)
    a, b = 2 * np.pi * s / _PHI, 2 * np.pi * s / _PSI
    quat = np.stack([r * np.sin(a), r * np.cos(a), big_r * np.sin(b), big_r * np.cos(b)], axis=1)
    return Rotation.from_quat(quat).as_matrix()


def local_offsets(step_deg: float) -> np.ndarray:
    """27 small rotations: axis-angle vectors on a 3×3×3 grid of spacing ``step_deg / 2``.

    Returns
    -------
    (27, 3, 3) rotation matrices, the identity included (index 13)
    """
    h = math.radians(step_deg) / 2
    g = np.array([-h, 0.0, h])
    vec = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return Rotation.from_rotvec(vec).as_matrix()


def angular_distance_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotations, (..., 3, 3) each -> (...,) degrees."""
    tr = np.einsum("...ij,...ij->...", a, b)  # trace(a^T b)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0)))
