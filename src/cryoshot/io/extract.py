"""Cut subtomograms (or 2D particle boxes) out of tomograms (or micrographs).

Coordinates come from a STAR file in RELION's conventions (``rlnCoordinateX/Y/Z``
in pixels, or RELION 5 centred coordinates in Å). The box is centred on the
rounded coordinate: voxel ``box // 2`` of the output is the particle centre.
Tomograms are memory-mapped, so only the boxes are read; subtomograms are written
as they are cut, 2D boxes gathered into one stack. Memory and disk are estimated
before any work (:func:`extraction_estimate`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cryoshot.errors import CryoshotError
from cryoshot.io.mrc import read_mrc, write_mrc
from cryoshot.io.particles import coordinates_px
from cryoshot.io.star import read_star_table, write_star
from cryoshot.utils.files import atomic_dir
from cryoshot.utils.resources import (
    FILE_OVERHEAD_BYTES,
    PROCESS_OVERHEAD_BYTES,
    STAR_ROW_BYTES,
    TABLE_ROW_BYTES,
    Estimate,
    check_fits,
)

EDGE_MODES = ("pad", "skip")
_BOX_TMP_BYTES = 24  # per box voxel while one box is cut, inverted and written (copies, header statistics)
_ROWS_PER_S = 2500.0  # rows located and cut per second (pandas per row)
_BYTES_PER_S = 2e8  # box bytes read and written per second


@dataclass
class ExtractReport:
    """What extraction did: rows written, rows skipped at the edge, boxes padded."""

    table: pd.DataFrame
    n_skipped: int
    n_padded: int


def cut_box(data: np.ndarray, centre_px: np.ndarray, box: int) -> tuple[np.ndarray, bool]:
    """Cut a box centred on ``centre_px`` (x, y[, z]) from ``data`` (indexed [z,] y, x).

    Parts outside ``data`` are filled with the mean of the part inside.

    Returns
    -------
    (box,)*ndim float32 array, and True when it was padded.
    """
    nd = data.ndim
    centre = np.round(np.asarray(centre_px, float)[::-1]).astype(int)  # to (z, y, x)
    lo = centre - box // 2
    hi = lo + box
    src = tuple(slice(max(lo[a], 0), min(hi[a], data.shape[a])) for a in range(nd))
    if any(s.start >= s.stop for s in src):
        raise CryoshotError(
            f"coordinate {tuple(centre_px)} lies outside the data of shape {data.shape[::-1]} (x, y, z)"
        )
    part = np.asarray(data[src], dtype=np.float32)
    if not np.all(np.isfinite(part)):
        raise CryoshotError(f"the box at {tuple(centre_px)} contains NaN or Inf values")
    padded = part.shape != (box,) * nd
    if not padded:
        return part.copy(), False
    out = np.full((box,) * nd, part.mean(), dtype=np.float32)
    dst = tuple(slice(s.start - lo[a], s.stop - lo[a]) for a, s in enumerate(src))
    out[dst] = part
    return out, True


def _source_for(row: pd.Series, star_dir: Path, override: Path | None, column: str) -> Path:
    if override is not None:
        return override
    if column not in row.index:
        other = "rlnMicrographName" if column == "rlnTomoName" else "rlnTomoName"
        hint = (" (it names micrographs: for 2D boxes pass --2d)" if other == "rlnMicrographName"
                else " (it names tomograms: leave out --2d for subtomograms)") if other in row.index else ""  # fmt: skip
        raise CryoshotError(
            f"the STAR file has no {column} column{hint}; or pass the {'tomogram' if column == 'rlnTomoName' else 'micrograph'} "
            "explicitly with --tomogram / --micrograph"
        )
    name = str(row[column])
    for cand in (Path(name), star_dir / name, star_dir / f"{name}.mrc"):
        if cand.is_file():
            return cand
    raise CryoshotError(f"cannot find {column} '{name}' (looked beside the STAR file too); pass it explicitly")


def extract_particles(
    star_path: str | os.PathLike,
    outdir: str | os.PathLike,
    box: int,
    *,
    source: str | os.PathLike | None = None,
    dim: int = 3,
    angpix: float | None = None,
    edge: str = "pad",
    invert: bool = False,
    force: bool = False,
    progress: bool = True,
    force_size: bool = False,
) -> ExtractReport:
    """Extract boxes at the coordinates of ``star_path`` into a subtomogram (or particle) set.

    Parameters
    ----------
    star_path
        Coordinates (``rlnCoordinateX/Y[/Z]`` pixels or RELION 5 centred Å) with
        ``rlnTomoName`` (3D) or ``rlnMicrographName`` (2D) naming the source,
        unless ``source`` is given.
    outdir
        New folder: ``particles.star`` plus ``subtomo_NNNNNN.mrc`` (3D) or a
        ``particles.mrcs`` stack (2D). Every input column is kept.
    box
        Box size in pixels.
    dim
        3 for tomograms, 2 for micrographs.
    angpix
        Pixel size in Å overriding the source header.
    edge
        ``pad`` (fill outside with the box mean) or ``skip`` particles whose box
        leaves the data.
    invert
        Multiply by -1 (e.g. to make protein bright).
    force_size
        Run even when the estimated memory or disk (:func:`extraction_estimate`)
        exceeds what is available.

    Raises
    ------
    CryoshotError
        Bad options or input; a run that cannot fit in memory or on disk (without
        ``force_size``). Nothing is written then.
    """
    if box < 4:
        raise CryoshotError(f"box must be at least 4 pixels, got {box}")
    if edge not in EDGE_MODES:
        raise CryoshotError(f"edge mode must be one of {EDGE_MODES}, got '{edge}'")
    if dim not in (2, 3):
        raise CryoshotError("dim must be 2 (micrographs) or 3 (tomograms)")
    star_path = Path(star_path)
    df = read_star_table(star_path)
    if len(df) == 0:
        raise CryoshotError(f"{star_path} lists no particles")
    est = extraction_estimate(len(df), box, dim, n_columns=len(df.columns))
    check_fits(
        est.memory_bytes, est.disk_bytes, outdir, force_size,
        f"extracting {len(df)} boxes of {box}^{dim}", seconds=est.seconds,
        hint="extract fewer particles (split the STAR file) or use a smaller --box",
    )  # fmt: skip
    column = "rlnTomoName" if dim == 3 else "rlnMicrographName"
    override = Path(source) if source is not None else None
    cache: dict[Path, tuple[np.ndarray, float]] = {}

    def boxes():
        """(row index, box, padded) of every particle kept, in table order."""
        for i, (_, row) in enumerate(tqdm(df.iterrows(), total=len(df), desc="extracting", disable=not progress)):
            src = _source_for(row, star_path.parent, override, column)
            if src not in cache:
                m = read_mrc(src, mmap=True, ndim=dim, check_finite=False)
                vs = angpix or m.voxel_size_A
                if vs is None:
                    raise CryoshotError(f"{src} has no pixel size in its header; pass --angpix")
                cache[src] = (m.data, vs)
            data, vs = cache[src]
            xyz = coordinates_px(df.iloc[[i]], star_path, angpix=vs, shape_xyz=data.shape[::-1], ndim=dim)[0]
            lo = np.round(xyz) - box // 2
            inside = bool(np.all(lo >= 0) and np.all(lo + box <= np.array(data.shape[::-1])))
            if not inside and edge == "skip":
                continue
            out, padded = cut_box(data, xyz, box)
            yield i, (-out if invert else out), padded

    keep: list[int] = []
    n_padded = 0
    with atomic_dir(outdir, force=force) as tmp:
        if dim == 3:  # written as cut: memory holds one box
            for i, b, padded in boxes():
                pixel = next(iter(cache.values()))[1]  # the first source's, for every box (as a set needs one)
                write_mrc(tmp / f"subtomo_{len(keep):06d}.mrc", b, pixel)
                keep.append(i)
                n_padded += int(padded)
            names = [f"subtomo_{k:06d}.mrc" for k in range(len(keep))]
        else:
            stack = np.empty((len(df), box, box), np.float32)  # filled in place: no stacking copy
            for i, b, padded in boxes():
                stack[len(keep)] = b
                keep.append(i)
                n_padded += int(padded)
            if keep:
                write_mrc(tmp / "particles.mrcs", stack[: len(keep)], next(iter(cache.values()))[1], stack=True)
            names = [f"{k + 1:06d}@particles.mrcs" for k in range(len(keep))]
        if not keep:
            raise CryoshotError(
                f"no particle of {star_path} lies fully inside its data; use --edge pad or a smaller box"
            )
        table = df.iloc[keep].reset_index(drop=True).copy()
        table["rlnImageName"] = names
        write_star(tmp / "particles.star", table)
    return ExtractReport(table=table, n_skipped=len(df) - len(keep), n_padded=n_padded)


def extraction_estimate(n_particles: int, box: int, dim: int = 3, *, n_columns: int = 10) -> Estimate:
    """Memory, disk and time :func:`extract_particles` needs for ``n_particles`` boxes of ``box``^``dim``.

    Subtomograms are written one by one (memory: one box); 2D boxes are held in one
    stack until written, plus a stack-sized temporary for the MRC header statistics.
    The sources are memory-mapped, so reading them costs page cache, not memory.
    """
    n_particles = max(int(n_particles), 0)
    box_bytes = 4.0 * float(box) ** dim
    if dim == 3:
        mem = box_bytes / 4 * _BOX_TMP_BYTES
        disk = n_particles * (box_bytes + FILE_OVERHEAD_BYTES)
    else:
        mem = 2 * n_particles * box_bytes
        disk = n_particles * box_bytes + FILE_OVERHEAD_BYTES
    rows = n_particles * (TABLE_ROW_BYTES + 16 * n_columns)
    disk += n_particles * (STAR_ROW_BYTES + 16 * n_columns)
    seconds = n_particles * (1 / _ROWS_PER_S + box_bytes / _BYTES_PER_S)
    return Estimate(int(mem + rows + PROCESS_OVERHEAD_BYTES), int(disk), seconds)
