"""Resource checks before large work, and bounded particle placement on micrographs."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist

from cryoshot.errors import CryoshotError
from cryoshot.io.extract import extract_particles, extraction_estimate
from cryoshot.io.mrc import write_mrc
from cryoshot.io.star import write_star
from cryoshot.simulate.datasets import (
    check_structures_fit,
    micrograph_estimate,
    projection_estimate,
    subtomogram_estimate,
    write_micrographs,
    write_projections,
    write_subtomograms,
)
from cryoshot.simulate.micrographs import MicrographConfig, MicrographSimulator, placement_capacity, poisson_disk
from cryoshot.simulate.projections import ProjectionConfig, ProjectionSimulator
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator
from cryoshot.utils import resources
from cryoshot.utils.resources import (
    GiB,
    available_memory_bytes,
    check_fits,
    existing_parent,
    format_bytes,
    format_seconds,
    free_disk_bytes,
)


def _nothing_written(folder) -> bool:
    return list(folder.iterdir()) == []


@pytest.fixture
def out_root(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    return d


# -- helpers ------------------------------------------------------------------------------


def test_formatting():
    assert format_bytes(0) == "0 B"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * GiB) == "3.0 GiB"
    assert format_bytes(4e15) == "3.6 PiB"
    assert format_bytes(1e40).endswith("YiB")
    assert format_seconds(5) == "5 s"
    assert format_seconds(600) == "10 min"
    assert format_seconds(3 * 3600) == "3.0 h"
    assert format_seconds(5 * 86400) == "5.0 days"


def test_available_memory_and_free_disk_are_sane(tmp_path):
    mem = available_memory_bytes()
    assert mem is not None and 0 < mem
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert mem <= total
    # a path that does not exist yet is measured on the file system it will land on
    assert existing_parent(tmp_path / "a" / "b") == tmp_path
    free = free_disk_bytes(tmp_path / "a" / "b")
    assert free is not None and abs(free - shutil.disk_usage(tmp_path).free) < 64 * 2**20


def test_check_fits_small_is_silent(tmp_path, capsys):
    check_fits(10 * 2**20, 10 * 2**20, tmp_path / "out", what="a small run", seconds=1.0)
    assert capsys.readouterr().err == ""


def test_check_fits_announces_large_work_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 100 * GiB)
    check_fits(3 * GiB, 0, tmp_path / "out", what="a big run")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a big run" in err and "3.0 GiB" in err and "100.0 GiB available" in err
    check_fits(0, 0, None, what="a long run", seconds=7200)
    assert "2.0 h" in capsys.readouterr().err


def test_check_fits_refuses_what_does_not_fit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 1 * GiB)
    with pytest.raises(CryoshotError) as exc:
        check_fits(8 * GiB, 0, tmp_path / "out", what="this run", hint="use a smaller --box")
    msg = str(exc.value)
    assert "--force-size" in msg and "8.0 GiB" in msg and "1.0 GiB" in msg and "smaller --box" in msg
    # disk: more than is free at the output's file system
    monkeypatch.setattr(resources, "free_disk_bytes", lambda where: 5 * GiB)
    with pytest.raises(CryoshotError, match=r"20\.0 GiB of disk, but 5\.0 GiB is free.*--force-size"):
        check_fits(0, 20 * GiB, tmp_path / "out")
    # --force-size: runs, and says so
    check_fits(8 * GiB, 0, tmp_path / "out", force_size=True)
    assert "--force-size" in capsys.readouterr().err


# -- estimates ----------------------------------------------------------------------------


def test_estimates_are_sane():
    sub = subtomogram_estimate(SubtomogramConfig(box_px=40), 1000)
    assert 1000 * 40**3 * 4 < sub.disk_bytes < 1000 * (40**3 * 4 + 10_000)
    assert 100 * 2**20 < sub.memory_bytes < 2 * GiB  # one batch of 64, not the whole set
    assert subtomogram_estimate(SubtomogramConfig(box_px=40), 100_000).memory_bytes < 2 * GiB  # streamed
    assert subtomogram_estimate(SubtomogramConfig(box_px=40), 1000, save_clean=True).disk_bytes > 1.9 * sub.disk_bytes
    slow = subtomogram_estimate(SubtomogramConfig(box_px=40, method="tiltseries"), 1000)
    assert slow.seconds > 10 * sub.seconds
    mic = micrograph_estimate(MicrographConfig(size_px=4096), 10)
    assert 10 * 4096**2 * 4 < mic.disk_bytes < 11 * 4096**2 * 4
    assert 4096**2 * 4 * 4 < mic.memory_bytes < 4 * GiB
    proj = projection_estimate(ProjectionConfig(box_px=64), 100_000)
    assert proj.memory_bytes > 2 * 100_000 * 64**2 * 4  # the stack is held in memory (and copied once to write)
    assert extraction_estimate(10_000, 64, 3).memory_bytes < 1 * GiB  # subtomograms are written as cut
    assert extraction_estimate(10_000, 64, 2).memory_bytes > 2 * 10_000 * 64**2 * 4
    assert extraction_estimate(10_000, 64, 3).disk_bytes > 10_000 * 64**3 * 4


def test_structures_that_cannot_fit_are_refused_before_loading(tmp_path):
    t = time.time()
    with pytest.raises(CryoshotError, match="--force-size") as exc:
        check_structures_fit(1, 100_000, tmp_path / "out")
    assert "100000^3" in str(exc.value) and "smaller box" in str(exc.value)
    with pytest.raises(CryoshotError, match="--force-size"):
        check_structures_fit(2, 4096, tmp_path / "out", projector=True)
    assert time.time() - t < 1.0
    assert check_structures_fit(2, 24, tmp_path / "out").memory_bytes < 2**20


# -- writers refuse before writing anything ---------------------------------------------


def test_subtomograms_too_large_are_refused_before_any_file(small_structures, out_root):
    sim = SubtomogramSimulator(small_structures, SubtomogramConfig(box_px=24, pixel_size_A=16.0))
    t = time.time()
    with pytest.raises(CryoshotError, match="--force-size") as exc:
        write_subtomograms(sim, 10**10, out_root / "out", progress=False)
    assert "fewer subtomograms" in str(exc.value)
    assert time.time() - t < 2.0 and _nothing_written(out_root)


def test_subtomogram_batches_shrink_to_fit_memory(small_structures, out_root, monkeypatch):
    from cryoshot.io.mrc import read_mrc

    cfg = SubtomogramConfig(box_px=24, pixel_size_A=16.0)
    sim = SubtomogramSimulator(small_structures, cfg)
    write_subtomograms(sim, 6, out_root / "a", progress=False)
    avail = subtomogram_estimate(cfg, 6, batch_size=2).memory_bytes + 1
    monkeypatch.setattr("cryoshot.simulate.datasets.available_memory_bytes", lambda: avail)
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: avail)
    sizes = []
    simulate = sim.simulate
    monkeypatch.setattr(sim, "simulate", lambda idx, **kw: sizes.append(len(idx)) or simulate(idx, **kw))
    write_subtomograms(sim, 6, out_root / "b", progress=False)
    assert sizes == [2, 2, 2]
    for i in range(6):  # items do not depend on the batch
        name = f"subtomo_{i:06d}.mrc"
        np.testing.assert_array_equal(read_mrc(out_root / "a" / name).data, read_mrc(out_root / "b" / name).data)


def test_huge_micrograph_is_refused_before_any_file(small_structures, out_root):
    cfg = MicrographConfig(size_px=1_000_000, pixel_size_A=16.0, particle_box_px=24)
    sim = MicrographSimulator(small_structures, cfg)
    t = time.time()
    with pytest.raises(CryoshotError, match="--force-size") as exc:
        write_micrographs(sim, 1, out_root / "out", progress=False)
    assert "smaller --size" in str(exc.value) and "TiB of memory" in str(exc.value)
    assert time.time() - t < 2.0 and _nothing_written(out_root)


def test_huge_projection_stack_is_refused_before_any_file(small_structures, out_root):
    sim = ProjectionSimulator(small_structures, ProjectionConfig(box_px=24, pixel_size_A=16.0))
    with pytest.raises(CryoshotError, match="--force-size"):
        write_projections(sim, 10**10, out_root / "out", progress=False)
    assert _nothing_written(out_root)


def test_small_writers_still_work_and_stay_quiet(small_structures, out_root, capsys):
    sim = ProjectionSimulator(small_structures, ProjectionConfig(box_px=24, pixel_size_A=16.0, n_views=2))
    df = write_projections(sim, 10, out_root / "proj", progress=False, save_clean=True)
    assert len(df) == 10 and (out_root / "proj" / "particles_clean.mrcs").is_file()
    assert capsys.readouterr().err == ""


def test_extract_too_large_is_refused_before_any_file(tmp_path, out_root):
    write_mrc(tmp_path / "tomo.mrc", np.zeros((16, 16, 16), np.float32), 10.0)
    write_star(tmp_path / "c.star", pd.DataFrame({"rlnCoordinateX": [8], "rlnCoordinateY": [8], "rlnCoordinateZ": [8]}))
    with pytest.raises(CryoshotError, match="--force-size") as exc:
        extract_particles(tmp_path / "c.star", out_root / "out", 100_000, source=tmp_path / "tomo.mrc", progress=False)
    assert "smaller --box" in str(exc.value)
    assert _nothing_written(out_root)


def test_average_that_cannot_fit_is_refused_before_loading(tmp_path, out_root, monkeypatch):
    from cryoshot.align.workflow import average_estimate, average_set

    names = []
    for i in range(8):
        write_mrc(tmp_path / f"p{i}.mrc", np.zeros((16, 16, 16), np.float32), 10.0)
        names.append(f"p{i}.mrc")
    write_star(tmp_path / "set.star", pd.DataFrame({"rlnImageName": names, "rlnClassNumber": [1, 2] * 4}))
    est = average_estimate(tmp_path / "set.star")
    assert est is not None and est.memory_bytes > 8 * 16**3 * 4 and est.disk_bytes > 2 * 3 * 16**3 * 4
    assert average_estimate(tmp_path / "missing.star") is None  # the loader reports that error itself

    def no_loading(*args, **kwargs):
        raise AssertionError("the set was loaded before the size check")

    monkeypatch.setattr("cryoshot.align.workflow.load_subtomogram_set", no_loading)
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 2**20)
    with pytest.raises(CryoshotError, match="--force-size") as exc:
        average_set(tmp_path / "set.star", out_root / "avg", progress=False)
    assert "average fewer particles" in str(exc.value)
    assert _nothing_written(out_root)


# -- micrograph placement is bounded ------------------------------------------------------


def test_particles_that_do_not_fit_finish_fast_and_fewer():
    """The issue's case: -s 1bxn --size 256 --particles 100000 (64 px boxes at 5 Å) used to hang."""
    structs = load_structures(["1bxn"], 5.0, 64)
    sim = MicrographSimulator(structs, MicrographConfig(size_px=256, n_particles=100_000, ice_gradient=0.0))
    t = time.time()
    mic = sim.simulate(0)
    assert time.time() - t < 5.0
    n = len(mic.coords_px)
    assert 0 < n < 100_000 and n <= sim.expected_particles
    assert pdist(mic.coords_px).min() >= sim.min_distance_px
    assert np.all((mic.coords_px >= 32) & (mic.coords_px < 256 - 32))


def test_poisson_disk_is_bounded_and_exact():
    rng = np.random.default_rng(0)
    t = time.time()
    pts = poisson_disk(rng, 10**7, 1024, 16.0, 20.0)
    assert time.time() - t < 5.0
    assert len(pts) <= placement_capacity(1024, 16.0, 20.0) and pdist(pts).min() >= 20.0
    # a request that fits is met exactly, and reproducibly
    a = poisson_disk(np.random.default_rng(3), 50, 1024, 16.0, 20.0)
    b = poisson_disk(np.random.default_rng(3), 50, 1024, 16.0, 20.0)
    assert len(a) == 50 and np.array_equal(a, b)
    assert len(poisson_disk(rng, 0, 1024, 16.0, 20.0)) == 0


@pytest.mark.parametrize(("size", "box"), [(256, 512), (100, 64), (64, 64), (1024, 4)])
def test_particle_box_too_large_for_micrograph_is_a_config_error(size, box):
    with pytest.raises(CryoshotError, match="particle box|too small"):
        MicrographConfig(size_px=size, particle_box_px=box).validate()
