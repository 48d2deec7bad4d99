"""Particle tables and subtomogram sets.

A *subtomogram set* is a STAR file whose ``rlnImageName`` points at one MRC per
subtomogram (relative to the STAR file's folder), plus a label column when labels
are known (``rlnClassNumber`` by default; integer or string labels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cryoshot.errors import CryoshotError
from cryoshot.io.geometry import CENTERED_COLS, PIXEL_COLS, centered_A_to_pixels
from cryoshot.io.mrc import read_mrc
from cryoshot.io.star import read_star_table, require_columns

DEFAULT_LABEL_COLUMN = "rlnClassNumber"


def split_image_name(name: str) -> tuple[int | None, str]:
    """Split RELION's ``"000012@stack.mrcs"`` into (11, "stack.mrcs"); plain paths give (None, path)."""
    name = str(name)
    if "@" in name:
        idx, path = name.split("@", 1)
        try:
            return int(idx) - 1, path
        except ValueError as exc:
            raise CryoshotError(f"bad rlnImageName '{name}': the part before '@' must be an integer") from exc
    return None, name


def resolve_image_path(name: str, star_dir: Path) -> tuple[int | None, Path]:
    """Resolve an ``rlnImageName`` relative to the STAR file's folder."""
    idx, rel = split_image_name(name)
    p = Path(rel)
    return idx, (p if p.is_absolute() else star_dir / p)


def relative_image_name(path: str | os.PathLike, star_dir: str | os.PathLike, index: int | None = None) -> str:
    """The ``rlnImageName`` for ``path`` relative to ``star_dir`` (1-based ``index@`` for stacks)."""
    rel = os.path.relpath(Path(path), Path(star_dir))
    return f"{index + 1:06d}@{rel}" if index is not None else rel


def labels_from_table(df: pd.DataFrame, column: str, path: str | os.PathLike) -> np.ndarray:
    """Return the label column as an array of ints or strings; raise when missing or empty."""
    require_columns(df, [column], path)
    col = df[column]
    if col.isna().any():
        raise CryoshotError(f"label column {column} in {path} has {int(col.isna().sum())} empty entries")
    if pd.api.types.is_numeric_dtype(col):
        vals = col.to_numpy()
        if np.all(np.equal(np.mod(vals, 1), 0)):
            return vals.astype(np.int64)
        return vals
    return col.astype(str).to_numpy()


def coordinates_px(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    angpix: float | None = None,
    shape_xyz: tuple[int, ...] | None = None,
    ndim: int = 3,
) -> np.ndarray:
    """Particle coordinates in pixels, shape (N, ndim), ordered x, y(, z).

    Reads ``rlnCoordinateX/Y/Z`` (pixels); failing that, RELION 5
    ``rlnCenteredCoordinateX/Y/ZAngst``, which needs ``angpix`` and the tomogram
    shape ``shape_xyz``.
    """
    pix = list(PIXEL_COLS[:ndim])
    cen = list(CENTERED_COLS[:ndim])
    if all(c in df.columns for c in pix):
        return df[pix].to_numpy(dtype=float)
    if all(c in df.columns for c in cen):
        if angpix is None or shape_xyz is None:
            raise CryoshotError(
                f"{path} has RELION 5 centred coordinates (Å); give the pixel size (--angpix) "
                "and the tomogram so they can be converted to pixels"
            )
        return centered_A_to_pixels(df[cen].to_numpy(dtype=float), angpix, tuple(shape_xyz[:ndim]))
    raise CryoshotError(f"{path} has no coordinates: it needs {', '.join(pix)} (pixels) or {', '.join(cen)} (Å)")


@dataclass
class SubtomogramSet:
    """Subtomograms loaded from a STAR file.

    Attributes
    ----------
    volumes : (N, D, D, D) float32
        Volumes in file order (z, y, x).
    labels : (N,) ndarray or None
        Labels from the label column (ints or strings), None if not requested.
    voxel_size_A : float
        Voxel size in Å (header, or the ``angpix`` override).
    table : DataFrame
        The STAR table, unchanged, so outputs can keep every input column.
    star_path : Path
    """

    volumes: np.ndarray
    labels: np.ndarray | None
    voxel_size_A: float
    table: pd.DataFrame
    star_path: Path

    @property
    def box(self) -> int:
        return int(self.volumes.shape[-1])

    def __len__(self) -> int:
        return int(self.volumes.shape[0])


def load_subtomogram_set(
    star_path: str | os.PathLike,
    *,
    label_column: str | None = DEFAULT_LABEL_COLUMN,
    angpix: float | None = None,
    progress: bool = True,
) -> SubtomogramSet:
    """Load every subtomogram of a set into memory.

    Parameters
    ----------
    star_path
        STAR file with ``rlnImageName`` (one MRC per subtomogram, relative paths
        resolved against the STAR file's folder).
    label_column
        Column holding labels, or None to load unlabelled data.
    angpix
        Voxel size in Å overriding the MRC headers.

    Raises
    ------
    CryoshotError
        Missing files or columns, mixed box or voxel sizes, NaN/Inf values.
    """
    star_path = Path(star_path)
    df = read_star_table(star_path)
    require_columns(df, ["rlnImageName"], star_path)
    if len(df) == 0:
        raise CryoshotError(f"{star_path} lists no particles")
    labels = labels_from_table(df, label_column, star_path) if label_column else None
    star_dir = star_path.parent
    vols: np.ndarray | None = None  # filled in place: one allocation, no stacking copy
    sizes: set[float] = set()
    first_shape = None
    names = df["rlnImageName"].tolist()
    for k, name in enumerate(tqdm(names, desc="reading subtomograms", disable=not progress, leave=False)):
        idx, p = resolve_image_path(name, star_dir)
        m = read_mrc(p, ndim=3)
        vol = m.data[idx] if idx is not None else m.data
        if vol.ndim != 3:
            raise CryoshotError(f"{p} is not a 3D subtomogram (shape {vol.shape})")
        if first_shape is None:
            first_shape = vol.shape
        elif vol.shape != first_shape:
            raise CryoshotError(
                f"mixed box sizes in {star_path}: {p} is {vol.shape}, the first is {first_shape}; "
                "extract all subtomograms with one box size"
            )
        if len(set(vol.shape)) != 1:
            raise CryoshotError(f"{p} has a non-cubic box {vol.shape}; cryoshot needs cubic subtomograms")
        if m.voxel_size_A is not None:
            sizes.add(round(m.voxel_size_A, 3))
        if vols is None:
            vols = np.empty((len(names), *vol.shape), dtype=np.float32)
        vols[k] = vol
    if angpix is None:
        if not sizes:
            raise CryoshotError(f"the MRC headers of {star_path} carry no voxel size; pass --angpix")
        if len(sizes) > 1:
            raise CryoshotError(
                f"mixed voxel sizes in {star_path}: {sorted(sizes)} Å; resample them to one, or pass --angpix"
            )
        angpix = sizes.pop()
    return SubtomogramSet(volumes=vols, labels=labels, voxel_size_A=float(angpix), table=df, star_path=star_path)
