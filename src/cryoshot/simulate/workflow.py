"""The three ``cryoshot simulate`` verbs as library calls: config + structures -> a data set on disk.

Each call checks everything before any work (config ranges, the preview path, whether the
structures fit in memory), loads the structures, writes the set atomically and, when asked,
a preview PNG. The command line only builds the config and prints the summary. ``runner`` runs the
work units (chunks of items) elsewhere (``cryoshot.distributed``); ``continue_`` resumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryoshot.errors import CryoshotError
from cryoshot.simulate.datasets import check_structures_fit, write_micrographs, write_projections, write_subtomograms
from cryoshot.simulate.micrographs import MicrographConfig, MicrographSimulator
from cryoshot.simulate.projections import ProjectionConfig, ProjectionSimulator
from cryoshot.simulate.structures import Structure, expand_specs, load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator
from cryoshot.utils.files import check_output_free
from cryoshot.utils.workunits import Runner


@dataclass
class SimulationSummary:
    """What a simulate call wrote: item count, structures, the STAR file and the preview (or None)."""

    n_items: int
    n_classes: int
    structures: list[str]
    star: Path
    preview: Path | None


def _prepare(
    structures: list[str], config, box: int, outdir, preview, force: bool, force_size: bool, projector: bool
) -> list[Structure]:
    """Validate, check the preview path and the memory, then load the structures (in that order)."""
    config.validate()
    if preview is not None:
        preview = Path(preview)
        if preview.suffix.lower() != ".png":
            raise CryoshotError(f"--preview must name a .png file, got {preview}")
        check_output_free(preview, force)
    if not structures:
        raise CryoshotError("the structure list is empty: pass --structures, e.g. -s 1bxn,2cg9 or -s procedural:0-10")
    check_structures_fit(len(expand_specs(structures)), box, outdir, projector=projector, force_size=force_size)
    return load_structures(structures, config.pixel_size_A, box, seed=0)


def simulate_subtomograms(
    structures: list[str],
    outdir: str | os.PathLike,
    config: SubtomogramConfig,
    per_class: int = 20,
    *,
    save_clean: bool = False,
    preview: str | os.PathLike | None = None,
    force: bool = False,
    force_size: bool = False,
    progress: bool = True,
    runner: Runner | None = None,
    continue_: bool = False,
) -> SimulationSummary:
    """A labelled subtomogram set: ``per_class`` subtomograms of each structure (``particles.star`` + MRCs)."""
    if per_class < 1:
        raise CryoshotError(f"--per-class must be at least 1, got {per_class}")
    structs = _prepare(structures, config, config.box_px, outdir, preview, force, force_size, projector=False)
    sim = SubtomogramSimulator(structs, config)
    n = per_class * len(structs)
    write_subtomograms(sim, n, outdir, force=force, save_clean=save_clean, force_size=force_size, progress=progress,
                       specs=structures, runner=runner, continue_=continue_)  # fmt: skip
    if preview is not None:
        from cryoshot.plotting import volume_montage

        b = sim.simulate(range(min(len(structs), 12)))
        volume_montage(b.volumes, [s.name for s in structs[:12]], preview, force=force,
                       suptitle=f"central slices, SNR {config.snr}")  # fmt: skip
    return SimulationSummary(n, len(structs), [s.name for s in structs], Path(outdir) / "particles.star",
                             Path(preview) if preview else None)  # fmt: skip


def simulate_micrographs(
    structures: list[str],
    outdir: str | os.PathLike,
    config: MicrographConfig,
    n_micrographs: int = 2,
    *,
    save_clean: bool = False,
    preview: str | os.PathLike | None = None,
    force: bool = False,
    force_size: bool = False,
    progress: bool = True,
    runner: Runner | None = None,
    continue_: bool = False,
) -> SimulationSummary:
    """Micrographs of the structures with a ground-truth ``coordinates.star``; ``n_items`` counts particles."""
    if n_micrographs < 1:
        raise CryoshotError(f"--micrographs must be at least 1, got {n_micrographs}")
    structs = _prepare(structures, config, config.particle_box_px, outdir, preview, force, force_size, projector=True)
    sim = MicrographSimulator(structs, config)
    df = write_micrographs(sim, n_micrographs, outdir, force=force, save_clean=save_clean, force_size=force_size,
                           progress=progress, specs=structures, runner=runner, continue_=continue_)  # fmt: skip
    if preview is not None:
        from cryoshot.plotting import micrograph_preview

        mic = sim.simulate(0)
        micrograph_preview(mic.image, mic.coords_px, float(sim.radius_px.max()), preview, force=force)
    return SimulationSummary(len(df), len(structs), [s.name for s in structs], Path(outdir) / "coordinates.star",
                             Path(preview) if preview else None)  # fmt: skip


def simulate_projections(
    structures: list[str],
    outdir: str | os.PathLike,
    config: ProjectionConfig,
    per_class: int = 20,
    *,
    save_clean: bool = False,
    preview: str | os.PathLike | None = None,
    force: bool = False,
    force_size: bool = False,
    progress: bool = True,
    runner: Runner | None = None,
    continue_: bool = False,
) -> SimulationSummary:
    """2D particle images in orientation classes (``n_views`` per structure), ``per_class`` images each."""
    if per_class < 1:
        raise CryoshotError(f"--per-class must be at least 1, got {per_class}")
    structs = _prepare(structures, config, config.box_px, outdir, preview, force, force_size, projector=True)
    sim = ProjectionSimulator(structs, config)
    n = sim.n_classes * per_class
    write_projections(sim, n, outdir, force=force, save_clean=save_clean, force_size=force_size, progress=progress,
                      specs=structures, runner=runner, continue_=continue_)  # fmt: skip
    if preview is not None:
        from cryoshot.plotting import image_montage

        b = sim.simulate(range(min(sim.n_classes, 24)))
        image_montage(b.images, [f"class {k + 1}" for k in b.labels], preview, force=force)
    return SimulationSummary(n, sim.n_classes, [s.name for s in structs], Path(outdir) / "particles.star",
                             Path(preview) if preview else None)  # fmt: skip
