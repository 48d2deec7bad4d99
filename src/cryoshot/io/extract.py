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

from cryoshot.errors import CryoshotError
from cryoshot.io.mrc import read_mrc, write_mrc
from cryoshot.io.particles import coordinates_px
from cryoshot.io.star import read_star_table_once, write_star
from cryoshot.utils.files import atomic_dir, check_output_free
from cryoshot.utils.hashing import file_sha256
from cryoshot.utils.resources import (
    FILE_OVERHEAD_BYTES,
    PROCESS_OVERHEAD_BYTES,
    STAR_ROW_BYTES,
    TABLE_ROW_BYTES,
    Estimate,
    check_fits,
)
from cryoshot.utils.workunits import (
    Runner,
    WorkUnit,
    progress_folder,
    runner_or_serial,
    save_array,
    unit_output,
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


def extract_source_unit(star_path: str, source: str, rows: list[int], box: int, dim: int, angpix: float | None,
                        edge: str, invert: bool, pixel_A: float, *, out: Path) -> None:  # fmt: skip
    """Work unit: the boxes of table ``rows`` (all on ``source``), beside ``out``; kept rows and padding in ``out``.

    3D boxes are written as ``box_<row>.mrc`` at ``pixel_A`` (the set's one voxel size); 2D
    boxes as one ``.npy`` stack. ``out`` (``.npz``: ``rows``, ``padded``) is written last.
    """
    star_path = Path(star_path)
    df = read_star_table_once(star_path).iloc[rows]  # one parse per worker, not per source
    m = read_mrc(Path(source), mmap=True, ndim=dim, check_finite=False)
    vs = angpix or m.voxel_size_A
    if vs is None:
        raise CryoshotError(f"{source} has no pixel size in its header; pass --angpix")
    data = m.data
    xyz_all = coordinates_px(df, star_path, angpix=vs, shape_xyz=data.shape[::-1], ndim=dim)
    kept, padded, boxes = [], [], []
    for row, xyz in zip(rows, xyz_all, strict=True):
        lo = np.round(xyz) - box // 2
        inside = bool(np.all(lo >= 0) and np.all(lo + box <= np.array(data.shape[::-1])))
        if not inside and edge == "skip":
            continue
        b, pad = cut_box(data, xyz, box)
        b = -b if invert else b
        if dim == 3:
            write_mrc(out.parent / f"box_{row:09d}.mrc", b, pixel_A, force=True)
        else:
            boxes.append(b)
        kept.append(row)
        padded.append(pad)
    if dim == 2:
        stack = np.stack(boxes) if boxes else np.zeros((0, box, box), np.float32)
        save_array(out.parent / f"{out.stem}.boxes.npy", stack)
    with unit_output(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, rows=np.asarray(kept, np.int64), padded=np.asarray(padded, bool))


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
    runner: Runner | None = None,
    continue_: bool = False,
) -> ExtractReport:
    """Extract boxes at the coordinates of ``star_path`` into a subtomogram (or particle) set.

    Each source tomogram (micrograph) is one work unit, run by ``runner`` (None: this process;
    or a ``cryoshot.distributed`` runner); unit results wait in a hidden folder beside
    ``outdir`` until all are done, and ``continue_`` reuses them after a failure or a kill.

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
    df = read_star_table_once(star_path)  # the units read it from this parse too (shared: not modified)
    if len(df) == 0:
        raise CryoshotError(f"{star_path} lists no particles")
    est = extraction_estimate(len(df), box, dim, n_columns=len(df.columns))
    check_fits(
        est.memory_bytes, est.disk_bytes, outdir, force_size,
        f"extracting {len(df)} boxes of {box}^{dim}", seconds=est.seconds,
        hint="extract fewer particles (split the STAR file) or use a smaller --box",
    )  # fmt: skip
    check_output_free(outdir, force, folder=True)
    column = "rlnTomoName" if dim == 3 else "rlnMicrographName"
    override = Path(source) if source is not None else None
    by_source: dict[Path, list[int]] = {}
    for i, (_, row) in enumerate(df.iterrows()):  # every source found before any work
        by_source.setdefault(_source_for(row, star_path.parent, override, column), []).append(i)
    first = read_mrc(next(iter(by_source)), mmap=True, ndim=dim, check_finite=False)
    pixel = angpix or first.voxel_size_A  # the first source's, for every box (as a set needs one)
    if pixel is None:
        raise CryoshotError(f"{next(iter(by_source))} has no pixel size in its header; pass --angpix")
    coordinates_px(df.iloc[:1], star_path, angpix=pixel, shape_xyz=first.data.shape[::-1], ndim=dim)  # columns
    what = "tomogram" if dim == 3 else "micrograph"
    outdir = Path(outdir)
    settings = {"star": file_sha256(star_path), "box": box, "dim": dim, "angpix": angpix, "edge": edge,
                "invert": invert, "source": str(override)}  # fmt: skip
    with progress_folder(outdir, settings, continue_) as partial:
        units = [WorkUnit(f"src_{k:06d}", f"{what} {src}", extract_source_unit,
                          (str(star_path.resolve()), str(src.resolve()), rows, box, dim, angpix, edge, invert,
                           float(pixel)), partial / f"src_{k:06d}.npz")
                 for k, (src, rows) in enumerate(by_source.items())]  # fmt: skip
        runner_or_serial(runner).run(units, desc="extracting", progress=progress)
        report = _assemble(df, units, partial, outdir, star_path, dim, box, float(pixel), force)
    return report


def _assemble(df: pd.DataFrame, units: list[WorkUnit], partial: Path, outdir: Path, star_path: Path, dim: int,
              box: int, pixel: float, force: bool) -> ExtractReport:  # fmt: skip
    """The set, from the units' boxes, in table order."""
    results = [np.load(u.out) for u in units]
    keep = np.sort(np.concatenate([r["rows"] for r in results])) if results else np.zeros(0, np.int64)
    n_padded = int(sum(r["padded"].sum() for r in results))
    if not len(keep):
        raise CryoshotError(f"no particle of {star_path} lies fully inside its data; use --edge pad or a smaller box")
    with atomic_dir(outdir, force=force) as tmp:
        if dim == 3:
            names = [f"subtomo_{k:06d}.mrc" for k in range(len(keep))]
            for k, row in enumerate(keep):
                os.replace(partial / f"box_{row:09d}.mrc", tmp / names[k])
        else:
            stack = np.empty((len(keep), box, box), np.float32)
            where = {int(row): k for k, row in enumerate(keep)}
            for u, r in zip(units, results, strict=True):
                boxes = np.load(partial / f"{u.out.stem}.boxes.npy")
                for j, row in enumerate(r["rows"]):
                    stack[where[int(row)]] = boxes[j]
            write_mrc(tmp / "particles.mrcs", stack, pixel, stack=True)
            names = [f"{k + 1:06d}@particles.mrcs" for k in range(len(keep))]
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
