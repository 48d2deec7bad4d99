"""Write simulated data sets to disk: subtomogram sets, micrographs, projection stacks.

Outputs are written into a temporary folder and moved into place only when
complete; an existing output folder is replaced only with ``force``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cryoshot.io.geometry import matrix_to_euler
from cryoshot.io.mrc import write_mrc
from cryoshot.io.star import write_star
from cryoshot.simulate.micrographs import MicrographSimulator
from cryoshot.simulate.projections import ProjectionSimulator
from cryoshot.simulate.subtomograms import SubtomogramSimulator
from cryoshot.utils.files import atomic_dir

STRUCTURE_COLUMN = "cryoshotStructureName"


def write_subtomograms(
    sim: SubtomogramSimulator,
    n_items: int,
    outdir: str | os.PathLike,
    *,
    force: bool = False,
    save_clean: bool = False,
    batch_size: int = 64,
    progress: bool = True,
) -> pd.DataFrame:
    """Simulate ``n_items`` subtomograms into ``outdir`` as a subtomogram set.

    Writes ``subtomo_NNNNNN.mrc`` (and ``subtomo_NNNNNN_clean.mrc`` with
    ``save_clean``) and ``particles.star`` with ``rlnImageName`` (relative),
    ``rlnClassNumber`` (1-based structure index), the structure name, the pose
    (``rlnAngleRot/Tilt/Psi``, ``rlnOriginX/Y/ZAngst``) and ``rlnDefocusU`` (Å).

    Returns
    -------
    DataFrame, the particle table written.
    """
    c = sim.config
    rows = []
    with atomic_dir(outdir, force=force) as tmp:
        bar = tqdm(total=n_items, desc="simulating subtomograms", unit="vol", disable=not progress)
        for start in range(0, n_items, batch_size):
            idx = range(start, min(start + batch_size, n_items))
            b = sim.simulate(idx, with_clean=save_clean)
            eul = matrix_to_euler(b.matrices)
            for k, i in enumerate(b.indices):
                name = f"subtomo_{i:06d}.mrc"
                write_mrc(tmp / name, b.volumes[k], c.pixel_size_A)
                if save_clean:
                    write_mrc(tmp / f"subtomo_{i:06d}_clean.mrc", b.clean[k], c.pixel_size_A)
                lab = int(b.labels[k])
                rows.append(
                    {
                        "rlnImageName": name,
                        "rlnClassNumber": lab + 1,
                        STRUCTURE_COLUMN: sim.structures[lab].name,
                        "rlnAngleRot": eul[k, 0],
                        "rlnAngleTilt": eul[k, 1],
                        "rlnAnglePsi": eul[k, 2],
                        "rlnOriginXAngst": b.shifts_px[k, 0] * c.pixel_size_A,
                        "rlnOriginYAngst": b.shifts_px[k, 1] * c.pixel_size_A,
                        "rlnOriginZAngst": b.shifts_px[k, 2] * c.pixel_size_A,
                        "rlnDefocusU": b.defocus_um[k] * 1e4,
                    }
                )
            bar.update(len(idx))
        bar.close()
        df = pd.DataFrame(rows)
        write_star(tmp / "particles.star", df)
    return df


def write_micrographs(
    sim: MicrographSimulator,
    n_micrographs: int,
    outdir: str | os.PathLike,
    *,
    force: bool = False,
    save_clean: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Simulate micrographs into ``outdir``: ``mic_NNNN.mrc`` and ``coordinates.star``.

    The STAR table has ``rlnMicrographName`` (relative), ``rlnCoordinateX/Y``
    (pixels), ``rlnClassNumber`` (1-based), the structure name, the angles and
    ``rlnDefocusU`` (Å).
    """
    c = sim.config
    rows = []
    with atomic_dir(outdir, force=force) as tmp:
        for m in tqdm(range(n_micrographs), desc="simulating micrographs", unit="mic", disable=not progress):
            mic = sim.simulate(m)
            name = f"mic_{m:04d}.mrc"
            write_mrc(tmp / name, mic.image, c.pixel_size_A)
            if save_clean:
                write_mrc(tmp / f"mic_{m:04d}_clean.mrc", mic.clean, c.pixel_size_A)
            eul = matrix_to_euler(mic.matrices) if len(mic.labels) else np.zeros((0, 3))
            for k, ((x, y), lab) in enumerate(zip(mic.coords_px, mic.labels, strict=True)):
                rows.append(
                    {
                        "rlnMicrographName": name,
                        "rlnCoordinateX": float(x),
                        "rlnCoordinateY": float(y),
                        "rlnClassNumber": int(lab) + 1,
                        STRUCTURE_COLUMN: sim.structures[int(lab)].name,
                        "rlnAngleRot": eul[k, 0],
                        "rlnAngleTilt": eul[k, 1],
                        "rlnAnglePsi": eul[k, 2],
                        "rlnDefocusU": mic.defocus_um * 1e4,
                    }
                )
        df = pd.DataFrame(rows)
        write_star(tmp / "coordinates.star", df)
    return df


def write_projections(
    sim: ProjectionSimulator,
    n_images: int,
    outdir: str | os.PathLike,
    *,
    force: bool = False,
    save_clean: bool = False,
    batch_size: int = 256,
    progress: bool = True,
) -> pd.DataFrame:
    """Simulate projection images into ``outdir``: ``particles.mrcs`` and ``particles.star``.

    ``rlnImageName`` is ``NNNNNN@particles.mrcs``; ``rlnClassNumber`` is the
    1-based orientation class (structure * n_views + view).
    """
    c = sim.config
    chunks, cleans, rows = [], [], []
    for start in tqdm(range(0, n_images, batch_size), desc="simulating projections", disable=not progress):
        b = sim.simulate(range(start, min(start + batch_size, n_images)))
        chunks.append(b.images)
        cleans.append(b.clean)
        eul = matrix_to_euler(b.matrices)
        for k in range(len(b.labels)):
            i = start + k
            rows.append(
                {
                    "rlnImageName": f"{i + 1:06d}@particles.mrcs",
                    "rlnClassNumber": int(b.labels[k]) + 1,
                    STRUCTURE_COLUMN: sim.structures[int(b.structure[k])].name,
                    "rlnAngleRot": eul[k, 0],
                    "rlnAngleTilt": eul[k, 1],
                    "rlnAnglePsi": eul[k, 2],
                    "rlnDefocusU": b.defocus_um[k] * 1e4,
                }
            )
    df = pd.DataFrame(rows)
    with atomic_dir(outdir, force=force) as tmp:
        write_mrc(tmp / "particles.mrcs", np.concatenate(chunks), c.pixel_size_A, stack=True)
        if save_clean:
            write_mrc(tmp / "particles_clean.mrcs", np.concatenate(cleans), c.pixel_size_A, stack=True)
        write_star(tmp / "particles.star", df)
    return df


def subtomogram_set_path(outdir: str | os.PathLike) -> Path:
    """The STAR file of a simulated subtomogram set."""
    return Path(outdir) / "particles.star"
