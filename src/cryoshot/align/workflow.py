"""``cryoshot average``: per-class averages, FSC resolution, aligned STAR, figures."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryoshot.align.average import AverageConfig, ClassAverage, refine_class
from cryoshot.align.search import working_grid
from cryoshot.align.so3 import grid_size
from cryoshot.errors import CryoshotError
from cryoshot.io.geometry import matrix_to_euler
from cryoshot.io.mrc import read_mrc, write_mrc
from cryoshot.io.particles import labels_from_table, load_subtomogram_set, resolve_image_path
from cryoshot.io.star import read_star_table, write_star
from cryoshot.utils.files import atomic_dir, check_output_free
from cryoshot.utils.resources import (
    FILE_OVERHEAD_BYTES,
    PROCESS_OVERHEAD_BYTES,
    STAR_ROW_BYTES,
    TABLE_ROW_BYTES,
    Estimate,
    check_fits,
)

# Measured on Linux (2 CPU cores, torch CPU), rounded up.
_WEDGE_BATCH = 64  # particles per batch of the wedge-compensated average
_WEDGE_BYTES = 36  # per voxel per batch particle: rotation grid, rotated copy, spectra, rotated wedges
_FLOPS_PER_S = 1e10  # complex multiply-adds of the rotation x shift search, as 8 real flops each
_WEDGE_VOXELS_PER_S = 3e7  # particle voxels rotated and averaged per second
_FIGURES_BYTES = 2 * 2**20


@dataclass
class AverageSummary:
    """What ``average_set`` wrote: per class (label, particle count, resolution in Å)."""

    outdir: Path
    rows: list[tuple[str, int, float]]


def _ball_points(radius: int) -> int:
    """Integer shifts within ``radius`` voxels (the translations the search scores)."""
    r = np.arange(-radius, radius + 1)
    return int(((r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) <= radius**2).sum())


def _peek_set(
    star: str | os.PathLike, class_column: str | None, skip_classes: tuple[str, ...], angpix: float | None
) -> tuple[int, list[int], int, float | None]:
    """Particle count, class sizes, box and voxel size of a set, from its table and first header only."""
    star = Path(star)
    df = read_star_table(star)
    if "rlnImageName" not in df.columns or len(df) == 0:
        raise CryoshotError("no particles")
    if class_column:
        labels = pd.Series([str(v) for v in labels_from_table(df, class_column, star)])
        sizes = [int(k) for c, k in labels.value_counts().items() if c not in skip_classes]
    else:
        sizes = [len(df)]
    _, path = resolve_image_path(str(df["rlnImageName"].iloc[0]), star.parent)
    m = read_mrc(path, mmap=True, check_finite=False)
    return len(df), sizes, int(m.data.shape[-1]), angpix or m.voxel_size_A


def average_estimate(
    star: str | os.PathLike,
    *,
    class_column: str | None = "rlnClassNumber",
    skip_classes: tuple[str, ...] = ("unknown",),
    config: AverageConfig | None = None,
    angpix: float | None = None,
) -> Estimate | None:
    """Memory, disk and time :func:`average_set` needs, from the STAR table and the first header.

    Memory: the whole set (float32), plus, for the largest class, its copy, its spectra
    while it is cropped to the working grid, the shifted spectra of a half set that the
    rotation search correlates (half x shifts x band frequencies, complex64) and one batch
    of the wedge-compensated average. Time: the rotation x shift search dominates.
    Returns None when the set cannot be read (:func:`load_subtomogram_set` then says why).
    """
    config = config or AverageConfig()
    try:
        n, sizes, box, px = _peek_set(star, class_column, skip_classes, angpix)
    except (CryoshotError, OSError, ValueError):
        return None
    if not sizes:
        return None
    al = config.align
    voxels = float(box) ** 3
    if px:
        work, work_px = working_grid(box, px, al.lowpass_A)
        r_hi = min(work * work_px / max(al.lowpass_A, 2 * work_px), work / 2)  # band edge, in voxels
        r_lo = work * work_px / al.highpass_A if al.highpass_A else 0.0
        shifts = _ball_points(min(int(al.max_shift_A / work_px + 1e-6), 64))
    else:  # no voxel size yet: the largest case, full box and Nyquist
        work, r_hi, r_lo, shifts = box, box / 2, 0.0, 1
    n_freq = max(2 * np.pi / 3 * (r_hi**3 - min(r_lo, r_hi) ** 3), 1.0)  # half-sphere of the band
    big = max(sizes)
    half = (big + 1) // 2
    mem = (
        4 * voxels * (n + 2 * big)  # the set; the class copy and its spectra while cropped to the working grid
        + 8 * half * shifts * (n_freq + al.chunk)  # shifted spectra and one chunk of correlations
        + _WEDGE_BYTES * voxels * min(_WEDGE_BATCH, big)
        + 12 * voxels * len(sizes)  # average and half maps of each class
        + TABLE_ROW_BYTES * n
        + PROCESS_OVERHEAD_BYTES
    )
    disk = len(sizes) * 3 * (4 * voxels + FILE_OVERHEAD_BYTES) + STAR_ROW_BYTES * n + _FIGURES_BYTES
    poses = grid_size(al.angular_step_deg) + al.refine_levels * al.n_candidates * 27
    total = sum(sizes)
    flops = 8.0 * total * shifts * n_freq * poses * config.iterations
    seconds = flops / _FLOPS_PER_S + total * voxels * (config.iterations + 1) / _WEDGE_VOXELS_PER_S
    return Estimate(int(mem), int(disk), seconds)


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def average_set(
    star: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    class_column: str | None = "rlnClassNumber",
    skip_classes: tuple[str, ...] = ("unknown",),
    reference: str | os.PathLike | None = None,
    config: AverageConfig | None = None,
    angpix: float | None = None,
    force: bool = False,
    progress: bool = True,
    force_size: bool = False,
) -> AverageSummary:
    """Average every class of a subtomogram set into ``outdir`` (written atomically).

    Writes ``class_<label>.mrc`` and its two half maps, ``fsc_<label>.csv``
    (frequency 1/Å, resolution Å, FSC), ``fsc.png``, ``averages.png`` (central
    slices of each average beside raw particles) and ``particles_aligned.star``
    (the input columns plus ``rlnAngleRot/Tilt/Psi``, ``rlnOriginX/Y/ZAngst``,
    ``rlnRandomSubset`` and ``cryoshotAlignScore``).
    ``class_column=None`` averages all particles as one class. Before loading anything
    the memory, disk and time are estimated (:func:`average_estimate`); a run that cannot
    fit is refused unless ``force_size``.

    Raises
    ------
    CryoshotError
        Bad input or options; a run that cannot fit in memory or on disk (without ``force_size``).
    """
    config = config or AverageConfig()
    config.validate()
    check_output_free(outdir, force, folder=True)  # before any work, not after it
    if class_column:
        table = read_star_table(star)
        if class_column not in table.columns:
            hint = (" (classify writes its classes to cryoshotPredictedClass: pass --class-column "
                    "cryoshotPredictedClass)") if "cryoshotPredictedClass" in table.columns else ""  # fmt: skip
            raise CryoshotError(f"{star} has no column {class_column}{hint}; pass --class-column with one of: "
                                f"{', '.join(map(str, table.columns))} (or 'none' for one class)")  # fmt: skip
    est = average_estimate(star, class_column=class_column, skip_classes=skip_classes, config=config, angpix=angpix)
    if est is not None:
        check_fits(
            est.memory_bytes, est.disk_bytes, outdir, force_size, f"averaging the subtomograms of {star}",
            seconds=est.seconds, hint="average fewer particles (split the STAR file), or bin them to a smaller box",
        )  # fmt: skip
    ds = load_subtomogram_set(star, label_column=class_column, angpix=angpix, progress=progress)
    labels = ds.labels if class_column else np.full(len(ds), "all", dtype=object)
    labels = np.array([str(v) for v in labels], dtype=object)
    classes = [c for c in sorted(set(labels)) if c not in skip_classes]
    if not classes:
        raise CryoshotError(f"no class to average in {star} (all rows are {', '.join(skip_classes)})")
    ref = None
    if reference is not None:
        mv = read_mrc(reference)
        ref_data, ref_px = np.asarray(mv.data, np.float32), mv.voxel_size_A or ds.voxel_size_A
        if ref_data.shape != ds.volumes.shape[1:]:
            raise CryoshotError(
                f"reference {reference} has box {ref_data.shape}, the particles {ds.volumes.shape[1:]}; "
                "resample one of them (e.g. relion_image_handler --new_box)"
            )
        if abs(ref_px - ds.voxel_size_A) > 1e-3 * ds.voxel_size_A:
            raise CryoshotError(
                f"reference {reference} has voxel size {ref_px:.3f} Å, the particles {ds.voxel_size_A:.3f} Å; "
                "rescale the reference or pass --angpix"
            )
        ref = ref_data
    for c in classes:  # check every class before the long work
        n = int((labels == c).sum())
        if n < 4:
            raise CryoshotError(f"class {c} has {n} particle(s); gold-standard averaging needs at least 4")
    results: dict[str, ClassAverage] = {}
    for c in classes:
        sel = np.flatnonzero(labels == c)
        results[c] = refine_class(
            ds.volumes[sel], ds.voxel_size_A, config, reference=ref, progress=progress, name=f"class {c}"
        )
    table = ds.table.copy()
    px = ds.voxel_size_A
    rows = []
    with atomic_dir(outdir, force=force) as tmp:
        for c, r in results.items():
            sel = np.flatnonzero(labels == c)
            eul = matrix_to_euler(r.matrices)
            for j, col in enumerate(("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")):
                table.loc[table.index[sel], col] = eul[:, j]
            for j, ax in enumerate("XYZ"):
                table.loc[table.index[sel], f"rlnOrigin{ax}Angst"] = r.shifts_A[:, j]
            table.loc[table.index[sel], "rlnRandomSubset"] = r.subset
            table.loc[table.index[sel], "cryoshotAlignScore"] = r.scores
            name = _safe(c)
            write_mrc(tmp / f"class_{name}.mrc", r.average, px)
            write_mrc(tmp / f"class_{name}_half1.mrc", r.half1, px)
            write_mrc(tmp / f"class_{name}_half2.mrc", r.half2, px)
            with np.errstate(divide="ignore"):
                res = np.where(r.frequency_per_A > 0, 1.0 / r.frequency_per_A, np.inf)
            pd.DataFrame({"frequency_per_A": r.frequency_per_A, "resolution_A": res, "fsc": r.fsc}).to_csv(
                tmp / f"fsc_{name}.csv", index=False
            )
            rows.append((c, len(sel), r.resolution_A))
        if "rlnRandomSubset" in table:
            table["rlnRandomSubset"] = table["rlnRandomSubset"].fillna(0).astype(int)
        write_star(tmp / "particles_aligned.star", table)
        from cryoshot.plotting import average_figure, fsc_plot

        fsc_plot({c: (r.frequency_per_A, r.fsc, r.resolution_A) for c, r in results.items()}, tmp / "fsc.png")
        raw = {c: ds.volumes[np.flatnonzero(labels == c)[:3]] for c in results}
        average_figure({c: r.average for c, r in results.items()}, raw, tmp / "averages.png")
    return AverageSummary(Path(outdir), rows)
