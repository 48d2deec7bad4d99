"""Particle tables and subtomogram sets.

A *subtomogram set* is a STAR file whose ``rlnImageName`` points at one MRC per
subtomogram (relative to the STAR file's folder), plus a label column when labels
are known (``rlnClassNumber`` by default; integer or string labels).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cryoshot.errors import CryoshotError
from cryoshot.io.geometry import CENTERED_COLS, PIXEL_COLS, centered_A_to_pixels
from cryoshot.io.mrc import read_mrc, read_mrc_slice
from cryoshot.io.star import read_star_table, read_star_table_once, require_columns

DEFAULT_LABEL_COLUMN = "rlnClassNumber"


def split_image_name(name: str) -> tuple[int | None, str]:
    """Split RELION's ``"000012@stack.mrcs"`` into (11, "stack.mrcs"); plain paths give (None, path).

    Parameters
    ----------
    name
        An ``rlnImageName`` value: ``path`` or ``index@path`` with a 1-based index.

    Returns
    -------
    index : int or None
        0-based position in the stack, None for a plain path.
    path : str
        The path part, unchanged.

    Raises
    ------
    CryoshotError
        An empty name or path, a NUL character, or an index that is not a whole
        number from 1 to 2**63 - 1 (``0``, ``-3``, ``abc``, ``1e300``, an empty one).
    """
    if name is None or (isinstance(name, float) and name != name):  # pandas reads an empty entry as NaN
        raise CryoshotError("an rlnImageName is empty; every particle needs an image name")
    name = str(name)
    if "\0" in name:
        raise CryoshotError(f"bad rlnImageName {name!r}: it contains a NUL character")
    if "@" not in name:
        if not name.strip():
            raise CryoshotError(f"bad rlnImageName {name!r}: it is empty; every particle needs an image name")
        return None, name
    idx, path = name.split("@", 1)
    if not path.strip():
        raise CryoshotError(f"bad rlnImageName {name!r}: no file after '@'; it should look like 000012@stack.mrcs")
    # plain ASCII digits only: int() would also take '+5', ' 5', '1_000' and other scripts' digits
    if not (idx.isascii() and idx.isdigit()):
        what = "empty" if not idx else f"'{idx}'"
        raise CryoshotError(
            f"bad rlnImageName {name!r}: the index before '@' is {what}; "
            "it must be a whole number from 1 (RELION counts images from 1), as in 000012@stack.mrcs"
        )
    digits = idx.lstrip("0") or "0"  # RELION pads with zeros; a long run of digits is never parsed
    if len(digits) > 19 or int(digits) > np.iinfo(np.int64).max:
        raise CryoshotError(f"bad rlnImageName {name!r}: the index {idx} is too large for any stack")
    i = int(digits)
    if i < 1:
        raise CryoshotError(
            f"bad rlnImageName {name!r}: the index is {idx}, but RELION counts images from 1; "
            "use 000001@ for the first image"
        )
    return i - 1, path


def resolve_image_path(name: str, star_dir: Path) -> tuple[int | None, Path]:
    """Resolve an ``rlnImageName`` relative to the STAR file's folder.

    Returns the 0-based stack index (None for a plain path) and the path, joined
    to ``star_dir`` unless absolute; raises as :func:`split_image_name`. When no
    file is there, a RELION project path is looked for where RELION writes it:
    relative to the working folder, then to each folder above ``star_dir`` (a
    ``Class2D/job010/run_data.star`` names ``Extract/job005/...`` from the project
    folder). Failing all, the path next to the STAR file is returned, for the error.
    """
    idx, rel = split_image_name(name)
    key = (str(star_dir), rel, os.getcwd())
    found = _FOUND.get(key)
    if found is not None:
        return idx, found
    p = Path(rel)
    if p.is_absolute():
        return idx, p
    here = Path(star_dir) / p
    for cand in (here, *(base / p for base in (Path.cwd(), *Path(star_dir).resolve().parents))):
        if cand.exists():
            if len(_FOUND) > 100_000:
                _FOUND.clear()
            _FOUND[key] = cand  # only files found are remembered: one look per stack, not per particle
            return idx, cand
    return idx, here


_FOUND: dict[tuple[str, str, str], Path] = {}


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
        if pd.api.types.is_integer_dtype(col):
            return vals.astype(np.int64)
        if not np.all(np.isfinite(vals)):
            raise CryoshotError(f"label column {column} in {path} holds non-finite values (inf); fix the labels")
        whole = np.equal(np.mod(vals, 1), 0)
        if np.all(whole) and np.all(np.abs(vals) < 2**53):  # exactly representable whole numbers
            return vals.astype(np.int64)
        return col.astype(str).to_numpy()  # other numbers are names, kept exactly as written
    return col.astype(str).to_numpy()


def drop_duplicate_images(
    df: pd.DataFrame, path: str | os.PathLike, labels: np.ndarray | None = None, warn: bool = True
) -> tuple[pd.DataFrame, np.ndarray | None, int]:
    """Keep the first row of each ``rlnImageName``; warn on stderr how many repeats were dropped.

    A repeated image would otherwise count twice (in both half sets of an average, or as its own
    neighbour in a leave-one-out threshold). The same image under two labels is an error.

    Returns
    -------
    (table, labels, number of rows dropped)
    """
    names = df["rlnImageName"].astype(str)
    dup = names.duplicated(keep="first").to_numpy()
    if not dup.any():
        return df, labels, 0
    if labels is not None:
        per_name = pd.DataFrame({"n": names, "l": labels.astype(str)}).groupby("n")["l"].nunique()
        if (per_name > 1).any():
            bad = per_name[per_name > 1].index[0]
            raise CryoshotError(f"{path} lists image {bad} more than once with different labels; fix the labels")
    n = int(dup.sum())
    if warn:
        print(f"cryoshot: warning: {n} row(s) of {path} repeat an earlier rlnImageName; each image is used once "
              f"({len(df) - n} of {len(df)} rows kept)", file=sys.stderr)  # fmt: skip
    keep = ~dup
    return df[keep].reset_index(drop=True), (labels[keep] if labels is not None else None), n


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

    def numbers(cols: list[str]) -> np.ndarray:
        vals = df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(vals)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise CryoshotError(f"{path}: {cols[c]} of row {df.index[r] + 1} is '{df[cols[c]].iloc[r]}', not a "
                                "finite number; fix or remove that row")  # fmt: skip
        return vals

    if all(c in df.columns for c in pix):
        return numbers(pix)
    if all(c in df.columns for c in cen):
        if angpix is None or shape_xyz is None:
            raise CryoshotError(
                f"{path} has RELION 5 centred coordinates (Å); give the pixel size (--angpix) "
                "and the tomogram so they can be converted to pixels"
            )
        return centered_A_to_pixels(numbers(cen), angpix, tuple(shape_xyz[:ndim]))
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
    n_duplicates : int
        Rows dropped because they repeated an earlier ``rlnImageName``.
    """

    volumes: np.ndarray
    labels: np.ndarray | None
    voxel_size_A: float
    table: pd.DataFrame
    star_path: Path
    n_duplicates: int = 0

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
    rows: tuple[int, int] | None = None,
    warn_duplicates: bool = True,
) -> SubtomogramSet:
    """Load every subtomogram of a set into memory (or the rows ``[start, stop)`` of it).

    Parameters
    ----------
    star_path
        STAR file with ``rlnImageName`` (one MRC per subtomogram, relative paths
        resolved against the STAR file's folder).
    label_column
        Column holding labels, or None to load unlabelled data.
    angpix
        Voxel size in Å overriding the MRC headers.
    rows
        ``(start, stop)``: only these rows of the table (after duplicates are dropped), for
        work units that each read a part of a large set.
    warn_duplicates
        Say on stderr how many repeated rows were dropped (once per set, not per unit).

    Raises
    ------
    CryoshotError
        Missing files or columns, mixed box or voxel sizes, NaN/Inf values.
    """
    star_path = Path(star_path)
    df = read_star_table(star_path) if rows is None else read_star_table_once(star_path)  # units: parsed once
    require_columns(df, ["rlnImageName"], star_path)
    if len(df) == 0:
        raise CryoshotError(f"{star_path} lists no particles")
    labels = labels_from_table(df, label_column, star_path) if label_column else None
    df, labels, n_duplicates = drop_duplicate_images(df, star_path, labels, warn=warn_duplicates)
    if rows is not None:
        df = df.iloc[rows[0] : rows[1]]
        labels = labels[rows[0] : rows[1]] if labels is not None else None
        if len(df) == 0:
            raise CryoshotError(f"{star_path} has no rows {rows[0]}..{rows[1] - 1}; it changed during the run")
    star_dir = star_path.parent
    vols: np.ndarray | None = None  # filled in place: one allocation, no stacking copy
    sizes: set[float] = set()
    first_shape = None
    names = df["rlnImageName"].tolist()
    for k, name in enumerate(tqdm(names, desc="reading subtomograms", disable=not progress, leave=False)):
        idx, p = resolve_image_path(name, star_dir)
        m = read_mrc_slice(p, idx, ndim=3) if idx is not None else read_mrc(p, ndim=3)
        vol = m.data
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
    return SubtomogramSet(volumes=vols, labels=labels, voxel_size_A=float(angpix), table=df, star_path=star_path,
                          n_duplicates=n_duplicates)  # fmt: skip


def rebase_image_names(
    names: pd.Series | list[str], from_dir: str | os.PathLike, to_dir: str | os.PathLike
) -> list[str]:
    """``rlnImageName`` values relative to ``from_dir`` rewritten relative to ``to_dir``.

    Absolute paths stay absolute; ``index@`` stack prefixes are kept as written.
    """
    from_dir, to_dir = Path(os.path.abspath(from_dir)), Path(os.path.abspath(to_dir))
    out = []
    for name in list(names):
        name = str(name)
        _, rel = split_image_name(name)  # the one parser of rlnImageName (validates the index too)
        prefix = name[: len(name) - len(rel)]  # "000012@" as written, or ""
        p = Path(rel)
        if not p.is_absolute():
            p = Path(os.path.relpath(from_dir / p, to_dir))
        out.append(f"{prefix}{p.as_posix()}")
    return out
