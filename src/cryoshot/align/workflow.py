"""``cryoshot average``: per-class averages, FSC resolution, aligned STAR, figures."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryoshot.align.average import AverageConfig, ClassAverage, refine_class
from cryoshot.errors import CryoshotError
from cryoshot.io.geometry import matrix_to_euler
from cryoshot.io.mrc import read_mrc, write_mrc
from cryoshot.io.particles import load_subtomogram_set
from cryoshot.io.star import write_star
from cryoshot.utils.files import atomic_dir


@dataclass
class AverageSummary:
    """What ``average_set`` wrote: per class (label, particle count, resolution in Å)."""

    outdir: Path
    rows: list[tuple[str, int, float]]


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
) -> AverageSummary:
    """Average every class of a subtomogram set into ``outdir`` (written atomically).

    Writes ``class_<label>.mrc`` and its two half maps, ``fsc_<label>.csv``
    (frequency 1/Å, resolution Å, FSC), ``fsc.png``, ``averages.png`` (central
    slices of each average beside raw particles) and ``particles_aligned.star``
    (the input columns plus ``rlnAngleRot/Tilt/Psi``, ``rlnOriginX/Y/ZAngst``,
    ``rlnRandomSubset`` and ``cryoshotAlignScore``).
    ``class_column=None`` averages all particles as one class.
    """
    config = config or AverageConfig()
    config.validate()
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
