"""MRC volumes, micrographs and image stacks through mrcfile.

The voxel size is always written. Large tomograms can be memory-mapped. Every
failure mode a user meets (missing, not an MRC, truncated, wrong dimensionality,
NaN/Inf) becomes a :class:`~cryoshot.errors.CryoshotError` that says what to do.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from cryoshot.errors import CryoshotError
from cryoshot.utils.files import atomic_file


@dataclass
class MrcVolume:
    """Data and voxel size of one MRC file.

    Attributes
    ----------
    data : (Z, Y, X) or (Y, X) or (N, Y, X) ndarray
        Values in file order (mrcfile's z, y, x indexing); a ``numpy.memmap``
        when opened with ``mmap=True``.
    voxel_size_A : float or None
        Voxel size in Å from the header (x axis), or None when the header has 0.
    is_stack : bool
        True when the header marks a 2D image stack (``.mrcs``).
    """

    data: np.ndarray
    voxel_size_A: float | None
    is_stack: bool = False


def _open_error(path: Path, exc: Exception) -> CryoshotError:
    msg = str(exc)
    if "Map ID string" in msg or "not an MRC" in msg:
        hint = "not an MRC file (no 'MAP ' ID in its header), or the header is corrupt"
    elif "bytes" in msg and ("Expected" in msg or "expected" in msg or "too small" in msg):
        hint = "truncated: the file is shorter than its header says; copy or export it again"
    else:
        hint = msg
    return CryoshotError(f"cannot read MRC file {path}: {hint}")


def read_mrc(
    path: str | os.PathLike,
    *,
    mmap: bool = False,
    ndim: int | tuple[int, ...] | None = None,
    check_finite: bool = True,
) -> MrcVolume:
    """Read an MRC file strictly.

    Parameters
    ----------
    path
        File to read.
    mmap
        Memory-map instead of loading (for large tomograms); the data stay on disk.
    ndim
        Accepted dimensionalities (2 for a micrograph, 3 for a volume or a stack).
    check_finite
        Raise when the data contain NaN or Inf. Skipped for memory-mapped files,
        where callers check each extracted box instead.

    Returns
    -------
    MrcVolume
    """
    path = Path(path)
    if not path.is_file():
        raise CryoshotError(f"MRC file {path} does not exist; check the path")
    opener = mrcfile.mmap if mmap else mrcfile.open
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            mrc = opener(path, mode="r", permissive=False)
    except (ValueError, RuntimeWarning, OSError, EOFError) as exc:
        raise _open_error(path, exc) from exc
    try:
        data = mrc.data
        if data is None:
            raise CryoshotError(f"MRC file {path} holds no data; it is truncated or empty")
        vs = float(mrc.voxel_size.x)
        is_stack = bool(mrc.is_image_stack()) or path.suffix == ".mrcs"
        if is_stack and data.ndim == 2:  # a one-image stack reads as a single image
            data = data[None]
        # in memory, mrcfile's array stays valid after close (no copy needed)
    finally:
        if not mmap:
            mrc.close()
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if data.ndim not in allowed:
            want = " or ".join(f"{d}D" for d in allowed)
            raise CryoshotError(f"{path} is {data.ndim}D with shape {data.shape}, but a {want} MRC is needed")
    if check_finite and not mmap and not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise CryoshotError(f"{path} contains {n_bad} NaN or Inf values; fix or drop this file")
    return MrcVolume(data=data, voxel_size_A=vs if vs > 0 else None, is_stack=is_stack)


def write_mrc(
    path: str | os.PathLike,
    data: np.ndarray,
    voxel_size_A: float,
    *,
    force: bool = False,
    stack: bool = False,
) -> Path:
    """Write ``data`` atomically as MRC with the voxel size set.

    Parameters
    ----------
    path
        Destination; refused if it exists unless ``force``.
    data : (Z, Y, X), (Y, X) or (N, Y, X) array
        float32 is written as mode 2, float16 as mode 12.
    voxel_size_A
        Voxel (pixel) size in Å; must be positive.
    stack
        Mark a 3D array as a stack of 2D images (``.mrcs``).
    """
    if not voxel_size_A or voxel_size_A <= 0:
        raise CryoshotError(f"voxel size must be positive, got {voxel_size_A}")
    arr = np.asarray(data)
    if arr.dtype not in (np.float16, np.float32, np.int8, np.int16, np.uint16):
        arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise CryoshotError(f"refusing to write {path}: data contain NaN or Inf")
    with atomic_file(path, force=force) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(arr))
            if stack:
                mrc.set_image_stack()
            elif arr.ndim == 3:
                mrc.set_volume()
            mrc.voxel_size = float(voxel_size_A)
            mrc.update_header_stats()
    return Path(path)
