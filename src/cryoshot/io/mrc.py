"""MRC volumes, micrographs and image stacks through mrcfile.

The voxel size is always written. Large tomograms can be memory-mapped. Every
failure mode a user meets (missing, a folder, not an MRC, truncated, corrupt
header, wrong dimensionality, NaN/Inf) becomes a
:class:`~cryoshot.errors.CryoshotError` that says what to do. The header is
checked against the file size before mrcfile reads anything, so a corrupt
dimension or extended-header size fails at once instead of allocating gigabytes.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE
from mrcfile.utils import byte_order_from_machine_stamp, data_shape_from_header, dtype_from_mode

from cryoshot.errors import CryoshotError
from cryoshot.utils.files import atomic_file

_HEADER_BYTES = HEADER_DTYPE.itemsize  # 1024
_VOLUME_STACK_SPACEGROUPS = range(401, 631)


@dataclass
class MrcVolume:
    """Data and voxel size of one MRC file.

    Attributes
    ----------
    data : (Z, Y, X) or (Y, X) or (N, Y, X) ndarray
        Values in file order (mrcfile's z, y, x indexing); a ``numpy.memmap``
        when opened with ``mmap=True``.
    voxel_size_A : float or None
        Voxel size in Å from the header (x axis), or None when the header has
        none (0, or a corrupt negative or non-finite value).
    is_stack : bool
        True when the header marks a 2D image stack (``.mrcs``).
    """

    data: np.ndarray
    voxel_size_A: float | None
    is_stack: bool = False


def require_input_file(path: str | os.PathLike, kind: str) -> Path:
    """Return ``path`` as a Path if it is a regular file, else raise a clear error.

    Parameters
    ----------
    path
        File to be read.
    kind
        What the file should be, for the message (``"MRC"``, ``"STAR"``).

    Raises
    ------
    CryoshotError
        The path is missing, a folder, or not a regular file (a FIFO or device,
        which could block a reader forever).
    """
    path = Path(path)
    try:
        if path.is_file():
            return path
        if path.is_dir():
            raise CryoshotError(f"{kind} file {path} is a folder, not a file; give the path of the file inside it")
        exists = path.exists()
    except (OSError, ValueError) as exc:  # e.g. a NUL byte or an over-long name
        raise CryoshotError(f"{kind} file path {str(path)!r} is not a valid path: {exc}") from exc
    if exists:
        raise CryoshotError(f"{kind} file {path} is not a regular file; give an ordinary {kind} file")
    raise CryoshotError(f"{kind} file {path} does not exist; check the path")


def _check_header(path: Path) -> None:
    """Check the header against the file size before mrcfile allocates anything."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(_HEADER_BYTES)
    except OSError as exc:  # unreadable (permissions), or gone since the check
        raise CryoshotError(f"cannot read MRC file {path}: {exc.strerror or exc}; check the file") from exc
    if len(raw) < _HEADER_BYTES:
        raise CryoshotError(
            f"cannot read MRC file {path}: it is {size} bytes, shorter than the {_HEADER_BYTES}-byte MRC header; "
            "it is truncated or not an MRC file"
        )
    header = np.frombuffer(raw, dtype=HEADER_DTYPE)[0]
    if bytes(header["map"])[:3] != b"MAP":  # mrcfile checks only these 3 bytes too
        raise CryoshotError(
            f"cannot read MRC file {path}: not an MRC file (no 'MAP ' ID in its header), or the header is corrupt"
        )
    try:
        order = byte_order_from_machine_stamp(header["machst"])
    except ValueError as exc:
        raise CryoshotError(
            f"cannot read MRC file {path}: {exc} (the byte order is unknown); the header is corrupt"
        ) from exc
    header = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(order)).reshape(()).view(np.recarray)
    nx, ny, nz, mode, nsymbt = (int(header[k]) for k in ("nx", "ny", "nz", "mode", "nsymbt"))
    try:
        itemsize = dtype_from_mode(mode).itemsize
    except ValueError as exc:
        raise CryoshotError(
            f"cannot read MRC file {path}: unsupported data mode {mode} (readable: 0, 1, 2, 4, 6, 12); "
            "the header is corrupt or the file was written in a mode mrcfile cannot read"
        ) from exc
    if min(nx, ny, nz) < 0 or nsymbt < 0:
        raise CryoshotError(
            f"cannot read MRC file {path}: the header has a negative size (nx, ny, nz = {nx}, {ny}, {nz}; "
            f"extended header {nsymbt} bytes); the header is corrupt"
        )
    if nx * ny * nz == 0:
        raise CryoshotError(f"MRC file {path} holds no data (nx, ny, nz = {nx}, {ny}, {nz}); it is empty or corrupt")
    if int(header["ispg"]) in _VOLUME_STACK_SPACEGROUPS and int(header["mz"]) <= 0:
        raise CryoshotError(
            f"cannot read MRC file {path}: a volume stack (space group {int(header['ispg'])}) needs mz > 0, "
            f"the header has mz = {int(header['mz'])}; the header is corrupt"
        )
    n_data = math.prod(data_shape_from_header(header)) * itemsize
    expected = _HEADER_BYTES + nsymbt + n_data
    if size < expected:
        raise CryoshotError(
            f"cannot read MRC file {path}: truncated: the file is {size} bytes but its header says {expected} "
            f"({nx} x {ny} x {nz} values of {itemsize} bytes after a {_HEADER_BYTES + nsymbt}-byte header); "
            "copy or export it again (if its size is right, the header is corrupt)"
        )
    if size > expected:
        raise CryoshotError(
            f"cannot read MRC file {path}: the file is {size - expected} bytes longer than its header says "
            f"({nx} x {ny} x {nz} values of {itemsize} bytes); the header is corrupt"
        )


def _open_error(path: Path, exc: Exception) -> CryoshotError:
    msg = str(exc)
    if "Map ID string" in msg or "not an MRC" in msg:
        hint = "not an MRC file (no 'MAP ' ID in its header), or the header is corrupt"
    elif "bytes" in msg and ("Expected" in msg or "expected" in msg or "too small" in msg):
        hint = "truncated: the file is shorter than its header says; copy or export it again"
    else:
        hint = msg
    return CryoshotError(f"cannot read MRC file {path}: {hint}")


def _open(path: Path, mmap: bool) -> mrcfile.mrcfile.MrcFile:
    """Open a checked MRC file read-only; mrcfile's warnings become errors."""
    _check_header(path)
    opener = mrcfile.mmap if mmap else mrcfile.open
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            return opener(path, mode="r", permissive=False)
    except (ValueError, RuntimeWarning, OSError, EOFError, MemoryError, OverflowError) as exc:
        raise _open_error(path, exc) from exc


def _voxel_size(mrc: mrcfile.mrcfile.MrcFile) -> float | None:
    """Voxel size along x from the header, or None when absent or unusable."""
    mx = int(mrc.header.mx)
    vs = float(mrc.header.cella.x) / mx if mx > 0 else 0.0
    return vs if math.isfinite(vs) and vs > 0 else None


def _check_ndim(path: Path, data: np.ndarray, ndim: int | tuple[int, ...] | None) -> None:
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if data.ndim not in allowed:
            want = " or ".join(f"{d}D" for d in allowed)
            raise CryoshotError(f"{path} is {data.ndim}D with shape {data.shape}, but a {want} MRC is needed")


def _check_finite(path: Path, data: np.ndarray, what: str = "") -> None:
    if not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise CryoshotError(f"{path}{what} contains {n_bad} NaN or Inf values; fix or drop this file")


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

    Raises
    ------
    CryoshotError
        Missing path or a folder; not an MRC; a header that does not match the
        file size (truncated or corrupt); wrong dimensionality; NaN or Inf.

    Notes
    -----
    A one-image stack and a 2D image have the same header, so a one-image stack
    is returned as a stack only when the file name ends in ``.mrcs``.
    """
    path = require_input_file(path, "MRC")
    mrc = _open(path, mmap)
    try:
        data = mrc.data
        if data is None:
            raise CryoshotError(f"MRC file {path} holds no data; it is truncated or empty")
        vs = _voxel_size(mrc)
        is_stack = bool(mrc.is_image_stack()) or path.suffix == ".mrcs"
        if is_stack and data.ndim == 2:  # a one-image stack reads as a single image
            data = data[None]
        # in memory, mrcfile's array stays valid after close (no copy needed)
    finally:
        if not mmap:
            mrc.close()
    _check_ndim(path, data, ndim)
    if check_finite and not mmap:
        _check_finite(path, data)
    return MrcVolume(data=data, voxel_size_A=vs, is_stack=is_stack)


def read_mrc_slice(
    path: str | os.PathLike,
    index: int,
    *,
    ndim: int | tuple[int, ...] | None = None,
    check_finite: bool = True,
) -> MrcVolume:
    """Read one item of a stack: image (or section) ``index`` along the first axis.

    Only that item is read from disk (the file is memory-mapped), so this suits
    RELION's ``000012@stack.mrcs`` names; a 2D file counts as a one-image stack.

    Parameters
    ----------
    path
        MRC stack.
    index
        0-based position along the first axis (RELION's ``n@`` minus one, as
        returned by :func:`cryoshot.io.particles.split_image_name`).
    ndim
        Accepted dimensionalities of the item (2 for an image, 3 for a volume
        from a volume stack).
    check_finite
        Raise when the item contains NaN or Inf.

    Returns
    -------
    MrcVolume
        ``data`` is an in-memory copy of the item; ``is_stack`` is False.

    Raises
    ------
    CryoshotError
        As :func:`read_mrc`, and when ``index`` is outside the stack.
    """
    path = require_input_file(path, "MRC")
    index = int(index)
    mrc = _open(path, mmap=True)
    try:
        data = mrc.data
        if data is None:
            raise CryoshotError(f"MRC file {path} holds no data; it is truncated or empty")
        stack = data[None] if data.ndim == 2 else data
        n = int(stack.shape[0])
        if not 0 <= index < n:
            raise CryoshotError(
                f"index {index + 1} (1-based, as in '{index + 1}@{path.name}') is outside {path}, "
                f"which holds {n} item(s) of shape {stack.shape[1:]}; fix rlnImageName or use the right stack"
            )
        item = np.array(stack[index])  # copy out of the memory map before it closes
        vs = _voxel_size(mrc)
    finally:
        mrc.close()
    _check_ndim(path, item, ndim)
    if check_finite:
        _check_finite(path, item, f" (item {index + 1})")
    return MrcVolume(data=item, voxel_size_A=vs, is_stack=False)


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
        float32 is written as mode 2, float16 as mode 12. Must not be empty.
    voxel_size_A
        Voxel (pixel) size in Å; must be positive, finite and fit the header's
        float32 cell size.
    stack
        Mark a 3D array as a stack of 2D images (``.mrcs``).
    """
    try:
        vs = float(voxel_size_A)
    except (TypeError, ValueError):
        vs = math.nan
    if not (math.isfinite(vs) and vs > 0):
        raise CryoshotError(f"voxel size must be positive, got {voxel_size_A}")
    arr = np.asarray(data)
    if arr.dtype not in (np.float16, np.float32, np.int8, np.int16, np.uint16):
        arr = arr.astype(np.float32)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise CryoshotError(f"refusing to write {path}: need a non-empty 2D or 3D array, got shape {arr.shape}")
    f32 = np.finfo(np.float32)  # the header stores the cell size, voxel size x n, as float32
    if vs < float(f32.tiny) or vs * max(arr.shape) > float(f32.max):
        raise CryoshotError(f"voxel size {vs} Å cannot be stored in an MRC header; check its units (Å)")
    if not np.all(np.isfinite(arr)):
        raise CryoshotError(f"refusing to write {path}: data contain NaN or Inf")
    # the header rms of huge values overflows float32: harmless, so not a warning
    with atomic_file(path, force=force) as tmp, np.errstate(over="ignore"):
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(arr))
            if stack:
                mrc.set_image_stack()
            elif arr.ndim == 3:
                mrc.set_volume()
            mrc.voxel_size = vs
            mrc.update_header_stats()
    return Path(path)
