"""RELION's geometric conventions: ZYZ Euler angles and RELION 5 centred coordinates.

Angles
------
``rlnAngleRot, rlnAngleTilt, rlnAnglePsi`` (degrees) define RELION's matrix ``A``
exactly as ``Euler_angles2matrix`` in RELION's ``euler.cpp``:
``A = (Rz(rot) Ry(tilt) Rz(psi))^T`` with right-handed active rotations. The particle
is the reference rotated actively by ``A``: ``particle(x) = reference(A^T x)``,
with vectors ordered (x, y, z).

Coordinates
-----------
``rlnCoordinateX/Y/Z`` are in pixels of the tomogram (or micrograph) they refer to.
RELION 5 ``rlnCenteredCoordinateX/Y/ZAngst`` are in Å from the tomogram centre,
taken as voxel ``size // 2`` (FFT-style centre): ``x_A = (x_px - nx // 2) * angpix``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

CENTERED_COLS = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")
PIXEL_COLS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
ANGLE_COLS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")


def euler_to_matrix(rot: np.ndarray, tilt: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """RELION ZYZ Euler angles (degrees) to matrices ``A``, shape (N, 3, 3) (or (3, 3))."""
    angles = np.stack(np.broadcast_arrays(rot, tilt, psi), axis=-1).astype(float)
    r = Rotation.from_euler("ZYZ", angles.reshape(-1, 3), degrees=True).as_matrix()
    a = np.transpose(r, (0, 2, 1))
    return a.reshape(angles.shape[:-1] + (3, 3))


def matrix_to_euler(a: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix`: (..., 3, 3) -> (..., 3) rot, tilt, psi in degrees."""
    a = np.asarray(a, dtype=float)
    flat = a.reshape(-1, 3, 3)
    eul = Rotation.from_matrix(np.transpose(flat, (0, 2, 1))).as_euler("ZYZ", degrees=True)
    return eul.reshape(a.shape[:-2] + (3,))


def centered_A_to_pixels(centered_A: np.ndarray, angpix: float, shape_xyz: tuple[int, ...]) -> np.ndarray:
    """RELION 5 centred coordinates (Å) to pixel coordinates; ``shape_xyz`` is (nx, ny, nz)."""
    centre = np.array([s // 2 for s in shape_xyz], dtype=float)
    return np.asarray(centered_A, float) / angpix + centre


def pixels_to_centered_A(pixels: np.ndarray, angpix: float, shape_xyz: tuple[int, ...]) -> np.ndarray:
    """Pixel coordinates to RELION 5 centred coordinates (Å)."""
    centre = np.array([s // 2 for s in shape_xyz], dtype=float)
    return (np.asarray(pixels, float) - centre) * angpix
