"""Write simulated data sets to disk: subtomogram sets, micrographs, projection stacks.

Outputs are written into a temporary folder and moved into place only when
complete; an existing output folder is replaced only with ``force``.

Before any work each writer estimates the memory it will hold at once and the disk
it will write (``*_estimate``) and refuses, through
:func:`cryoshot.utils.resources.check_fits`, what cannot fit unless ``force_size``.
:func:`check_structures_fit` does the same for loading the structures, which the
caller does before a writer runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cryoshot.errors import CryoshotError
from cryoshot.io.geometry import matrix_to_euler
from cryoshot.io.mrc import write_mrc
from cryoshot.io.star import write_star
from cryoshot.simulate.micrographs import MicrographConfig, MicrographSimulator
from cryoshot.simulate.projections import ProjectionConfig, ProjectionSimulator
from cryoshot.simulate.subtomograms import DEFOCUS_STEP_UM, SubtomogramConfig, SubtomogramSimulator
from cryoshot.utils.files import atomic_dir, check_output_free
from cryoshot.utils.resources import (
    FILE_OVERHEAD_BYTES,
    PROCESS_OVERHEAD_BYTES,
    STAR_ROW_BYTES,
    TABLE_ROW_BYTES,
    Estimate,
    available_memory_bytes,
    check_fits,
)
from cryoshot.utils.workunits import (
    Runner,
    WorkUnit,
    cached,
    chunks,
    progress_folder,
    runner_or_serial,
    save_array,
    unit_output,
)

STRUCTURE_COLUMN = "cryoshotStructureName"

# Peak memory and speed measured on Linux (2 CPU cores, torch CPU, peak RSS over the
# call), rounded up; the estimates are honest to within a factor of about 1.5.
_STRUCTURE_BYTES = 12  # per voxel per structure kept: density, the simulator's float32 stack (and its copy)
_STRUCTURE_TMP_BYTES = 16  # per voxel while one structure is rendered and resampled
_PROJECTOR_BYTES = 300  # per voxel per structure: the Fourier projector's 2x padded spectra and their copies
_SUBTOMO_BYTES = 40  # per voxel of each batch item (noise, rotation grid, spectra, outputs; fast path)
_SUBTOMO_TF_BYTES = 2  # per voxel per cached transfer function (one per 0.05 µm of defocus)
_SUBTOMO_GEOMETRY_BYTES = 12  # per voxel per tilt, once: the tilt profiles behind the transfer functions
_SUBTOMO_TILT_BYTES = 40  # per voxel per tilt of the item being reconstructed (tilt-series path)
_SUBTOMO_VOXELS_PER_S = 6e6  # item voxels (times tilts on the tilt-series path) per second
_MIC_PIXEL_BYTES = 48  # per micrograph pixel: image layers, CTF grid, FFTs, the write's statistics
_PARTICLE_PIXEL_BYTES = 40  # per pixel of each particle's projection (sampling grid, spectra)
_MIC_PIXELS_PER_S = 5e6  # micrograph plus particle pixels per second
_PLACEMENT_S_PER_SLOT = 1e-4  # placement when particles do not fit: its rounds of candidates
_PROJ_PIXEL_BYTES = 64  # per pixel of each image of a batch (noise, phases, CTF, FFTs)
_PROJ_S_PER_IMAGE = 5e-4  # per-image draws and table row
_PROJ_PIXELS_PER_S = 2.5e6
_HINT_SUBTOMO = "use a smaller --box, or fewer subtomograms (--per-class, fewer structures)"


def check_structures_fit(
    n_structures: int,
    box: int,
    outdir: str | os.PathLike | None = None,
    *,
    projector: bool = False,
    force_size: bool = False,
) -> Estimate:
    """Refuse to load ``n_structures`` densities on a ``box``^3 grid when they cannot fit in memory.

    Call it before :func:`cryoshot.simulate.structures.load_structures` (the writers below
    count only what they allocate once the simulator exists).

    Parameters
    ----------
    n_structures
        Structures to load (after expanding ``procedural:A-B`` and ``bundled``).
    box
        Their box in voxels (the particle box for micrographs and projections).
    outdir
        Where the output will go (unused for memory; kept for the message's context).
    projector
        Also count the Fourier projector of the micrograph and projection simulators
        (twice-padded spectra, about 300 bytes per density voxel).
    force_size
        Go on when it does not fit.

    Returns
    -------
    Estimate

    Raises
    ------
    CryoshotError
        The densities (and projector) need more memory than is available, without ``force_size``.
    """
    if n_structures < 1 or box < 1:
        return Estimate(0)
    voxels = float(box) ** 3
    per = _STRUCTURE_BYTES + (_PROJECTOR_BYTES if projector else 0)
    est = Estimate(int(n_structures * voxels * per + voxels * _STRUCTURE_TMP_BYTES))
    check_fits(
        est.memory_bytes, 0, outdir, force_size, f"loading {n_structures} structure(s) on a {box}^3 grid",
        hint="use a smaller box (--box or --particle-box) or fewer structures",
    )  # fmt: skip
    return est


def subtomogram_estimate(
    config: SubtomogramConfig, n_items: int, *, save_clean: bool = False, batch_size: int = 64
) -> Estimate:
    """Memory, disk and time :func:`write_subtomograms` needs once the simulator exists.

    Subtomograms are simulated ``batch_size`` at a time and written as they come, so
    memory holds one batch, the cached transfer functions (one per defocus step) and
    the particle table, whatever ``n_items``.
    """
    n_items = max(int(n_items), 0)
    voxels = float(config.box_px) ** 3
    b = min(batch_size, n_items)
    if config.method == "fast":
        n_tilts = len(config.scheme.angles_deg()) if config.use_wedge else 1
        n_defocus = int((config.defocus_max_um - config.defocus_min_um) / DEFOCUS_STEP_UM) + 2
        tfs = min(n_defocus, n_items, 512) * voxels * _SUBTOMO_TF_BYTES  # 512: the transfer-function cache
        mem = b * voxels * _SUBTOMO_BYTES + tfs + n_tilts * voxels * _SUBTOMO_GEOMETRY_BYTES
        seconds = n_items * voxels / _SUBTOMO_VOXELS_PER_S
    else:  # every item is projected at, and back-projected from, each tilt
        n_tilts = len(config.scheme.angles_deg()) if config.use_wedge else int(np.pi * config.box_px) + 1
        mem = b * voxels * 16 + n_tilts * voxels * _SUBTOMO_TILT_BYTES
        seconds = n_items * n_tilts * voxels / _SUBTOMO_VOXELS_PER_S
    n_files = n_items * (1 + int(save_clean))
    disk = n_files * (4 * voxels + FILE_OVERHEAD_BYTES) + n_items * STAR_ROW_BYTES
    return Estimate(int(mem + n_items * TABLE_ROW_BYTES + PROCESS_OVERHEAD_BYTES), int(disk), seconds)


def micrograph_estimate(
    config: MicrographConfig,
    n_micrographs: int,
    *,
    save_clean: bool = False,
    particles_per_micrograph: int | None = None,
) -> Estimate:
    """Memory, disk and time :func:`write_micrographs` needs once the simulator exists.

    One micrograph (or, before it, its particles' projections) is held at a time; the
    coordinate table grows with every particle. ``particles_per_micrograph`` is how many are
    expected to fit (:attr:`MicrographSimulator.expected_particles`; default: all asked).
    """
    n_micrographs = max(int(n_micrographs), 0)
    pixels = float(config.size_px) ** 2
    box_pixels = float(config.particle_box_px) ** 2
    n_part = config.n_particles if particles_per_micrograph is None else particles_per_micrograph
    # the particles are projected before the micrograph's own layers are built: the larger phase counts
    mem = max(pixels * _MIC_PIXEL_BYTES, pixels * 5 + n_part * box_pixels * _PARTICLE_PIXEL_BYTES)
    rows = n_micrographs * n_part
    disk = n_micrographs * (1 + int(save_clean)) * (4 * pixels + FILE_OVERHEAD_BYTES) + rows * STAR_ROW_BYTES
    seconds = n_micrographs * (pixels + n_part * box_pixels) / _MIC_PIXELS_PER_S
    if n_part < config.n_particles:  # placement runs all its rounds when the particles do not fit
        seconds += n_micrographs * n_part * _PLACEMENT_S_PER_SLOT
    return Estimate(int(mem + rows * TABLE_ROW_BYTES + PROCESS_OVERHEAD_BYTES), int(disk), seconds)


def projection_estimate(
    config: ProjectionConfig, n_images: int, *, save_clean: bool = False, batch_size: int = 256
) -> Estimate:
    """Memory, disk and time :func:`write_projections` needs once the simulator exists.

    The whole stack (and its clean twin with ``save_clean``) stays in memory until it
    is written, plus one stack-sized temporary while the MRC header statistics are
    computed, so memory grows with ``n_images``.
    """
    n_images = max(int(n_images), 0)
    pixels = float(config.box_px) ** 2
    stack = n_images * pixels * 4
    batch = min(batch_size, n_images) * pixels * _PROJ_PIXEL_BYTES
    mem = (2 + int(save_clean)) * stack + batch + n_images * TABLE_ROW_BYTES
    disk = (1 + int(save_clean)) * (stack + FILE_OVERHEAD_BYTES) + n_images * STAR_ROW_BYTES
    seconds = n_images * (_PROJ_S_PER_IMAGE + pixels / _PROJ_PIXELS_PER_S)
    return Estimate(int(mem + PROCESS_OVERHEAD_BYTES), int(disk), seconds)


# ---- work units: a chunk of items, a pure function of (seed, item index) ------------------------------
def _simulator(kind: str, specs: tuple[str, ...], config, _key=None):
    """The simulator of ``kind`` for structure ``specs`` (loaded once per process through ``cached``)."""
    from cryoshot.simulate.structures import load_structures

    cls = {"subtomograms": SubtomogramSimulator, "micrographs": MicrographSimulator,
           "projections": ProjectionSimulator}[kind]  # fmt: skip
    box = config.particle_box_px if kind == "micrographs" else config.box_px
    return cls(load_structures(list(specs), config.pixel_size_A, box, seed=0), config)


def _sim_for(kind: str, specs, config, sim=None):
    """The simulator a unit uses: ``sim`` itself in this process, else built once per worker from ``specs``."""
    if sim is not None:
        return sim
    return cached(_simulator, kind, tuple(specs), config, key=(kind, tuple(specs), repr(config)))


def _save_rows(out: Path, rows: list[dict]) -> None:
    with unit_output(out) as tmp:
        tmp.write_text(json.dumps(rows))


def _load_rows(units: list[WorkUnit]) -> pd.DataFrame:
    return pd.DataFrame([r for u in units for r in json.loads(u.out.read_text())])


def subtomogram_unit(specs, config: SubtomogramConfig, rows: tuple[int, int], save_clean: bool, *, out: Path,
                     sim=None) -> None:  # fmt: skip
    """Work unit: subtomograms ``[start, stop)`` as MRCs beside ``out``, their table rows (JSON) in ``out``."""
    sim = _sim_for("subtomograms", specs, config, sim)
    c, folder = sim.config, out.parent
    b = sim.simulate(range(*rows), with_clean=save_clean)
    eul = matrix_to_euler(b.matrices)
    table = []
    for k, i in enumerate(b.indices):
        name = f"subtomo_{i:06d}.mrc"
        write_mrc(folder / name, b.volumes[k], c.pixel_size_A, force=True)
        if save_clean:
            write_mrc(folder / f"subtomo_{i:06d}_clean.mrc", b.clean[k], c.pixel_size_A, force=True)
        lab = int(b.labels[k])
        table.append({
            "rlnImageName": name, "rlnClassNumber": lab + 1, STRUCTURE_COLUMN: sim.structures[lab].name,
            "rlnAngleRot": float(eul[k, 0]), "rlnAngleTilt": float(eul[k, 1]), "rlnAnglePsi": float(eul[k, 2]),
            "rlnOriginXAngst": float(b.shifts_px[k, 0] * c.pixel_size_A),
            "rlnOriginYAngst": float(b.shifts_px[k, 1] * c.pixel_size_A),
            "rlnOriginZAngst": float(b.shifts_px[k, 2] * c.pixel_size_A),
            "rlnDefocusU": float(b.defocus_um[k] * 1e4),
        })  # fmt: skip
    _save_rows(out, table)


def micrograph_unit(specs, config: MicrographConfig, m: int, save_clean: bool, *, out: Path, sim=None) -> None:
    """Work unit: micrograph ``m`` as ``mic_NNNN.mrc`` beside ``out``, its particles' rows (JSON) in ``out``."""
    sim = _sim_for("micrographs", specs, config, sim)
    c, folder = sim.config, out.parent
    mic = sim.simulate(m)
    name = f"mic_{m:04d}.mrc"
    write_mrc(folder / name, mic.image, c.pixel_size_A, force=True)
    if save_clean:
        write_mrc(folder / f"mic_{m:04d}_clean.mrc", mic.clean, c.pixel_size_A, force=True)
    eul = matrix_to_euler(mic.matrices) if len(mic.labels) else np.zeros((0, 3))
    table = [
        {"rlnMicrographName": name, "rlnCoordinateX": float(x), "rlnCoordinateY": float(y),
         "rlnClassNumber": int(lab) + 1, STRUCTURE_COLUMN: sim.structures[int(lab)].name,
         "rlnAngleRot": float(eul[k, 0]), "rlnAngleTilt": float(eul[k, 1]), "rlnAnglePsi": float(eul[k, 2]),
         "rlnDefocusU": float(mic.defocus_um * 1e4)}
        for k, ((x, y), lab) in enumerate(zip(mic.coords_px, mic.labels, strict=True))
    ]  # fmt: skip
    _save_rows(out, table)


def projection_unit(specs, config: ProjectionConfig, rows: tuple[int, int], save_clean: bool, *, out: Path,
                    sim=None) -> None:  # fmt: skip
    """Work unit: projection images ``[start, stop)`` as ``.npy`` beside ``out``, their rows (JSON) in ``out``."""
    sim = _sim_for("projections", specs, config, sim)
    b = sim.simulate(range(*rows))
    stem = out.name.removesuffix(".json")
    save_array(out.parent / f"{stem}.images.npy", b.images.astype(np.float32))
    if save_clean:
        save_array(out.parent / f"{stem}.clean.npy", b.clean.astype(np.float32))
    eul = matrix_to_euler(b.matrices)
    table = [
        {"rlnImageName": f"{rows[0] + k + 1:06d}@particles.mrcs", "rlnClassNumber": int(b.labels[k]) + 1,
         STRUCTURE_COLUMN: sim.structures[int(b.structure[k])].name, "rlnAngleRot": float(eul[k, 0]),
         "rlnAngleTilt": float(eul[k, 1]), "rlnAnglePsi": float(eul[k, 2]), "rlnDefocusU": float(b.defocus_um[k] * 1e4)}
        for k in range(len(b.labels))
    ]  # fmt: skip
    _save_rows(out, table)


def _chunk_units(prefix: str, what: str, fn, specs, config, n: int, size: int, save_clean: bool,
                 folder: Path) -> list[WorkUnit]:  # fmt: skip
    """Units of ``size`` consecutive items each, results ``folder/<prefix>_<start>.json``."""
    return [WorkUnit(f"{prefix}_{a:09d}", f"{what} {a + 1}..{b}", fn, (specs, config, (a, b), save_clean),
                     folder / f"{prefix}_{a:09d}.json") for a, b in chunks(n, size)]  # fmt: skip


@contextlib.contextmanager
def _run_units(kind: str, sim, specs, units_of, outdir, force: bool, continue_: bool, runner: Runner | None,
               progress: bool, desc: str, settings: dict):  # fmt: skip
    """Prepare the progress folder beside ``outdir``, run the units there, and yield (units, folder) to assemble.

    In this process the units use ``sim`` itself; on a runner each worker builds it from ``specs``.
    """
    if runner is not None and specs is None:
        raise CryoshotError(
            "simulating on a scheduler needs the structure specs (specs=[...]) to rebuild the simulator"
        )
    check_output_free(outdir, force, folder=True)
    fingerprint = {"kind": kind, "specs": specs, "config": repr(sim.config), **settings}
    with progress_folder(outdir, fingerprint, continue_) as partial:
        units = units_of(partial)
        if runner is None:  # this process: the simulator in hand
            units = [WorkUnit(u.key, u.item, functools.partial(u.fn, sim=sim), u.args, u.out) for u in units]
        runner_or_serial(runner).run(units, desc=desc, progress=progress)
        yield units, partial


def write_subtomograms(
    sim: SubtomogramSimulator,
    n_items: int,
    outdir: str | os.PathLike,
    *,
    force: bool = False,
    save_clean: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    force_size: bool = False,
    specs: list[str] | None = None,
    runner: Runner | None = None,
    continue_: bool = False,
) -> pd.DataFrame:
    """Simulate ``n_items`` subtomograms into ``outdir`` as a subtomogram set.

    Writes ``subtomo_NNNNNN.mrc`` (and ``subtomo_NNNNNN_clean.mrc`` with
    ``save_clean``) and ``particles.star`` with ``rlnImageName`` (relative),
    ``rlnClassNumber`` (1-based structure index), the structure name, the pose
    (``rlnAngleRot/Tilt/Psi``, ``rlnOriginX/Y/ZAngst``) and ``rlnDefocusU`` (Å).
    ``batch_size`` items make one work unit; it shrinks when a batch would not fit in the
    available memory (the items do not depend on it); ``force_size`` runs even when the
    estimate exceeds the available memory or disk. ``runner`` (with the structure ``specs``)
    runs the units elsewhere; ``continue_`` keeps the units an earlier run finished.

    Returns
    -------
    DataFrame, the particle table written.

    Raises
    ------
    CryoshotError
        The run cannot fit in memory or on disk (without ``force_size``); nothing is written.
    """
    c = sim.config
    _check_count(n_items, "subtomograms")
    est = subtomogram_estimate(c, n_items, save_clean=save_clean, batch_size=batch_size)
    avail = available_memory_bytes()
    while avail is not None and est.memory_bytes > avail and batch_size > 1:  # items do not depend on the batch
        batch_size //= 2
        est = subtomogram_estimate(c, n_items, save_clean=save_clean, batch_size=batch_size)
    check_fits(
        est.memory_bytes, est.disk_bytes, outdir, force_size,
        f"simulating {n_items} subtomograms of {c.box_px}^3", seconds=est.seconds, hint=_HINT_SUBTOMO,
    )  # fmt: skip

    units_of = functools.partial(_chunk_units, "items", "subtomograms", subtomogram_unit, specs, c, n_items,
                                 batch_size, save_clean)  # fmt: skip

    with _run_units("subtomograms", sim, specs, units_of, outdir, force, continue_, runner, progress,
                                    "simulating subtomograms", {"n": n_items, "clean": save_clean}) as (units, folder):  # fmt: skip
        df = _load_rows(units)
        with atomic_dir(outdir, force=force) as tmp:
            for name in df["rlnImageName"]:
                os.replace(folder / name, tmp / name)
                if save_clean:
                    clean = name.replace(".mrc", "_clean.mrc")
                    os.replace(folder / clean, tmp / clean)
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
    force_size: bool = False,
    specs: list[str] | None = None,
    runner: Runner | None = None,
    continue_: bool = False,
) -> pd.DataFrame:
    """Simulate micrographs into ``outdir``: ``mic_NNNN.mrc`` and ``coordinates.star``.

    The STAR table has ``rlnMicrographName`` (relative), ``rlnCoordinateX/Y``
    (pixels), ``rlnClassNumber`` (1-based), the structure name, the angles and
    ``rlnDefocusU`` (Å). ``force_size`` runs even when the estimate exceeds the
    available memory or disk. One micrograph is one work unit (``runner``, ``specs``,
    ``continue_`` as for :func:`write_subtomograms`).

    Raises
    ------
    CryoshotError
        The run cannot fit in memory or on disk (without ``force_size``); nothing is written.
    """
    c = sim.config
    _check_count(n_micrographs, "micrographs")
    est = micrograph_estimate(c, n_micrographs, save_clean=save_clean, particles_per_micrograph=sim.expected_particles)
    check_fits(
        est.memory_bytes, est.disk_bytes, outdir, force_size,
        f"simulating {n_micrographs} micrograph(s) of {c.size_px}^2 px", seconds=est.seconds,
        hint="use a smaller --size, fewer --micrographs or fewer --particles",
    )  # fmt: skip

    def units_of(folder: Path) -> list[WorkUnit]:
        return [WorkUnit(f"mic_{m:06d}", f"micrograph {m + 1}", micrograph_unit, (specs, c, m, save_clean),
                         folder / f"mic_{m:06d}.json") for m in range(n_micrographs)]  # fmt: skip

    with _run_units("micrographs", sim, specs, units_of, outdir, force, continue_, runner, progress,
                                    "simulating micrographs", {"n": n_micrographs, "clean": save_clean}) as (units, folder):  # fmt: skip
        df = _load_rows(units)
        if df.empty:
            df = pd.DataFrame(columns=["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnClassNumber",
                                       STRUCTURE_COLUMN, "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusU"])  # fmt: skip
        with atomic_dir(outdir, force=force) as tmp:
            for m in range(n_micrographs):
                for name in (f"mic_{m:04d}.mrc", *((f"mic_{m:04d}_clean.mrc",) if save_clean else ())):
                    os.replace(folder / name, tmp / name)
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
    force_size: bool = False,
    specs: list[str] | None = None,
    runner: Runner | None = None,
    continue_: bool = False,
) -> pd.DataFrame:
    """Simulate projection images into ``outdir``: ``particles.mrcs`` and ``particles.star``.

    ``rlnImageName`` is ``NNNNNN@particles.mrcs``; ``rlnClassNumber`` is the
    1-based orientation class (structure * n_views + view). The stack is held in
    memory until written; ``force_size`` runs even when it does not seem to fit.
    ``batch_size`` images make one work unit (``runner``, ``specs``, ``continue_`` as for
    :func:`write_subtomograms`).

    Raises
    ------
    CryoshotError
        The run cannot fit in memory or on disk (without ``force_size``); nothing is written.
    """
    c = sim.config
    _check_count(n_images, "projection images")
    est = projection_estimate(c, n_images, save_clean=save_clean, batch_size=batch_size)
    check_fits(
        est.memory_bytes, est.disk_bytes, outdir, force_size,
        f"simulating {n_images} projection images of {c.box_px}^2 px", seconds=est.seconds,
        hint="use fewer images (--per-class, --views) or a smaller --box",
    )  # fmt: skip

    units_of = functools.partial(_chunk_units, "images", "projection images", projection_unit, specs, c, n_images,
                                 batch_size, save_clean)  # fmt: skip

    with _run_units("projections", sim, specs, units_of, outdir, force, continue_, runner, progress,
                                    "simulating projections", {"n": n_images, "clean": save_clean}) as (units, folder):  # fmt: skip
        df = _load_rows(units)
        d = c.box_px
        images = np.empty((n_images, d, d), np.float32)  # filled in place: no concatenation copy
        cleans = np.empty((n_images, d, d), np.float32) if save_clean else None
        for u, (a, b) in zip(units, chunks(n_images, batch_size), strict=True):
            images[a:b] = np.load(folder / f"{u.key}.images.npy")
            if cleans is not None:
                cleans[a:b] = np.load(folder / f"{u.key}.clean.npy")
        with atomic_dir(outdir, force=force) as tmp:
            write_mrc(tmp / "particles.mrcs", images, c.pixel_size_A, stack=True)
            if cleans is not None:
                write_mrc(tmp / "particles_clean.mrcs", cleans, c.pixel_size_A, stack=True)
            write_star(tmp / "particles.star", df)
    return df


def _check_count(n: int, what: str) -> None:
    if n < 1:
        raise CryoshotError(f"nothing to simulate: the number of {what} must be at least 1, got {n}")


def subtomogram_set_path(outdir: str | os.PathLike) -> Path:
    """The STAR file of a simulated subtomogram set."""
    return Path(outdir) / "particles.star"
