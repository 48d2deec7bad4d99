"""Dask execution (``--scheduler``): same output as one process, failures reported per unit, killed workers survived."""

from __future__ import annotations

import os
import shutil
import signal
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")
pytest.importorskip("dask_jobqueue")

from cryoshot.cli import main  # noqa: E402
from cryoshot.distributed import SlurmOptions, open_runner, parse_scheduler, slurm_cluster  # noqa: E402
from cryoshot.errors import CryoshotError  # noqa: E402
from cryoshot.fewshot.classify import ClassifyConfig, classify_sets  # noqa: E402
from cryoshot.io.star import read_star_table, write_star  # noqa: E402
from cryoshot.pretrained import resolve_model  # noqa: E402
from cryoshot.simulate.micrographs import MicrographConfig  # noqa: E402
from cryoshot.simulate.projections import ProjectionConfig  # noqa: E402
from cryoshot.simulate.subtomograms import SubtomogramConfig  # noqa: E402
from cryoshot.simulate.workflow import simulate_micrographs, simulate_projections, simulate_subtomograms  # noqa: E402
from cryoshot.utils.workunits import UnitsFailed, cached, file_key  # noqa: E402

QUIET = {"progress": False}


@pytest.fixture(scope="module")
def runner():
    """One LocalCluster of 2 worker processes for the module (starting one takes seconds)."""
    with open_runner("local:2", log=lambda s: None) as r:
        yield r


def _same_files(a: Path, b: Path, pattern: str) -> int:
    """The MRC files matching ``pattern`` in ``a`` and ``b`` hold the same data (headers carry a time stamp)."""
    names = sorted(p.name for p in a.glob(pattern))
    assert names == sorted(p.name for p in b.glob(pattern)) and names
    for n in names:
        with mrcfile.open(a / n) as x, mrcfile.open(b / n) as y:
            np.testing.assert_allclose(x.data, y.data, rtol=1e-5, atol=1e-6, err_msg=n)
            assert x.voxel_size == y.voxel_size
    return len(names)


def _same_tables(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(read_star_table(a), read_star_table(b), check_exact=False, rtol=1e-6)


# ---- --scheduler and SLURM ----------------------------------------------------------------------
def test_scheduler_values_parse_and_bad_ones_say_what_is_allowed():
    assert parse_scheduler(None) is None
    assert parse_scheduler("local:3").workers == 3
    assert parse_scheduler("local").workers >= 1
    assert parse_scheduler("slurm").kind == "slurm"
    assert parse_scheduler("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    for bad in ("local:0", "locale", "mpi", "10.0.0.5:8786"):
        with pytest.raises(CryoshotError, match="local|1 <= N"):
            parse_scheduler(bad)


def test_slurm_job_script_carries_cores_memory_walltime_partition_and_lifetime():
    opts = SlurmOptions(cores=8, memory="32GB", walltime="02:00:00", partition="gpu", lifetime="110m")
    with slurm_cluster(opts) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -p gpu" in script
    assert "#SBATCH --cpus-per-task=8" in script
    assert "#SBATCH --mem=30G" in script  # 32 GB as GiB, SLURM's unit
    assert "#SBATCH -t 02:00:00" in script
    assert "--lifetime 110m" in script and "--lifetime-stagger 4m" in script
    assert "--nworkers 8" in script and "--nthreads 1" in script  # one single-threaded worker per core
    with slurm_cluster(SlurmOptions(cores=4, memory="16GB"), device="cuda") as cluster:
        gpu = cluster.job_script()
    assert "--gres=gpu:1" in gpu and "--nthreads 4" in gpu  # one worker drives the GPU with all cores


def test_slurm_options_are_checked():
    for bad in (SlurmOptions(walltime="2 hours"), SlurmOptions(memory="lots"), SlurmOptions(jobs=0)):
        with pytest.raises(CryoshotError):
            bad.validate()


def test_an_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(CryoshotError, match="cannot reach"), open_runner("tcp://127.0.0.1:9", log=lambda s: None):
        pass


# ---- the per-process cache -------------------------------------------------------------------------
def test_cached_loads_once_per_file_version(tmp_path):
    f = tmp_path / "w.txt"
    f.write_text("a")
    calls = []

    def load(path, *_key):
        calls.append(path)
        return Path(path).read_text()

    assert cached(load, str(f), *file_key(f)) == "a"
    assert cached(load, str(f), *file_key(f)) == "a"
    assert len(calls) == 1
    f.write_text("bb")  # a changed file (size and time) is loaded again
    assert cached(load, str(f), *file_key(f)) == "bb" and len(calls) == 2


# ---- same output as one process ----------------------------------------------------------------------
def test_simulate_on_local_workers_equals_one_process(tmp_path, runner):
    cfg = SubtomogramConfig(box_px=24, pixel_size_A=16.0, snr=0.1, seed=3)
    simulate_subtomograms(["1bxn", "4v4r"], tmp_path / "one", cfg, 40, **QUIET)
    from cryoshot.simulate.datasets import write_subtomograms  # noqa: F401 - units of 64 -> 2 units here

    simulate_subtomograms(["1bxn", "4v4r"], tmp_path / "dask", cfg, 40, runner=runner, **QUIET)
    assert _same_files(tmp_path / "one", tmp_path / "dask", "subtomo_*.mrc") == 80
    _same_tables(tmp_path / "one" / "particles.star", tmp_path / "dask" / "particles.star")

    pcfg = ProjectionConfig(box_px=32, pixel_size_A=10.0, n_views=3, seed=4)
    simulate_projections(["1bxn"], tmp_path / "p1", pcfg, 100, **QUIET)  # 300 images: 2 units of 256
    simulate_projections(["1bxn"], tmp_path / "p2", pcfg, 100, runner=runner, **QUIET)
    _same_files(tmp_path / "p1", tmp_path / "p2", "particles.mrcs")
    _same_tables(tmp_path / "p1" / "particles.star", tmp_path / "p2" / "particles.star")

    mcfg = MicrographConfig(size_px=128, pixel_size_A=10.0, particle_box_px=24, n_particles=8, seed=6)
    simulate_micrographs(["1bxn"], tmp_path / "m1", mcfg, 3, **QUIET)
    simulate_micrographs(["1bxn"], tmp_path / "m2", mcfg, 3, runner=runner, **QUIET)
    assert _same_files(tmp_path / "m1", tmp_path / "m2", "mic_*.mrc") == 3
    _same_tables(tmp_path / "m1" / "coordinates.star", tmp_path / "m2" / "coordinates.star")


@pytest.fixture(scope="module")
def subtomo_sets(tmp_path_factory) -> Path:
    """Support (4 per class) and query (60) sets of two structures; the query in its own folder."""
    root = tmp_path_factory.mktemp("cls")
    cfg = SubtomogramConfig(box_px=24, pixel_size_A=16.0, snr=0.5, seed=8)
    simulate_subtomograms(["1bxn", "4v4r"], root / "data", cfg, 32, **QUIET)
    t = read_star_table(root / "data" / "particles.star")
    sup = pd.concat([t[t["rlnClassNumber"] == c].iloc[:4] for c in (1, 2)])
    write_star(root / "data" / "support.star", sup)
    write_star(root / "data" / "query.star", t.drop(sup.index))
    return root


def _classify(sets: Path, out: Path, **kw) -> pd.DataFrame:
    return classify_sets(sets / "data" / "support.star", sets / "data" / "query.star", out, ClassifyConfig(method="protonet-ce", unit_rows=16),
                         model_path=resolve_model("default"), **QUIET, **kw)  # fmt: skip


def test_classify_on_local_workers_equals_one_process(subtomo_sets, tmp_path, runner):
    one = _classify(subtomo_sets, tmp_path / "one.star")
    dask = _classify(subtomo_sets, tmp_path / "dask.star", runner=runner)
    assert len(one) == 56 and (one["cryoshotPredictedClass"] == dask["cryoshotPredictedClass"]).all()
    np.testing.assert_allclose(one["cryoshotProbability"], dask["cryoshotProbability"], atol=1e-5)
    np.testing.assert_allclose(one["cryoshotMinDistance"], dask["cryoshotMinDistance"], rtol=1e-5)
    assert list(one["rlnImageName"]) == list(dask["rlnImageName"])
    assert not any(tmp_path.glob(".*cryoshot-partial"))  # the unit results are cleared once assembled
    loads = runner.client.run(_models_loaded)  # 4 units ran on 2 workers: the model was loaded once per worker
    assert sum(loads.values()) >= 1 and max(loads.values()) == 1, loads


def _models_loaded() -> int:
    from cryoshot.utils import workunits

    return sum(1 for k in workunits._CACHE if k[0][:2] == ("cryoshot.fewshot.classify", "_method_for"))


def test_a_failing_unit_is_reported_with_its_rows_and_continue_completes(subtomo_sets, tmp_path, runner):
    ref = _classify(subtomo_sets, tmp_path / "ref.star")
    q = read_star_table(subtomo_sets / "data" / "query.star")
    bad = subtomo_sets / "data" / q["rlnImageName"].iloc[40]  # row 41: the third unit of 16 (ProtoNet-CE: 30)
    saved = bad.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(bad, "r+") as m:
            m.data[0, 0, 0] = np.nan
    out = tmp_path / "cont.star"
    try:
        with pytest.raises(UnitsFailed, match=r"query rows 31\.\.56.*NaN.*--continue") as info:
            _classify(subtomo_sets, out, runner=runner)
        assert len(info.value.failures) == 1
        partial = tmp_path / ".cont.star.cryoshot-partial"
        assert not out.exists() and (partial / "rows_000000000.npz").exists()  # the other unit finished and is kept
    finally:
        bad.write_bytes(saved)
    res = _classify(subtomo_sets, out, runner=runner, continue_=True)
    assert (res["cryoshotPredictedClass"] == ref["cryoshotPredictedClass"]).all()
    np.testing.assert_allclose(res["cryoshotProbability"], ref["cryoshotProbability"], atol=1e-5)
    assert not (tmp_path / ".cont.star.cryoshot-partial").exists()


def test_a_killed_worker_still_gives_the_complete_correct_output(tmp_path, runner):
    """SIGKILL one worker process after the first unit finishes; Dask reruns its units elsewhere."""
    from cryoshot.simulate.datasets import write_subtomograms
    from cryoshot.simulate.structures import load_structures
    from cryoshot.simulate.subtomograms import SubtomogramSimulator

    cfg = SubtomogramConfig(box_px=24, pixel_size_A=16.0, snr=0.1, seed=11)
    sim = SubtomogramSimulator(load_structures(["1bxn"], 16.0, 24, seed=0), cfg)
    write_subtomograms(sim, 96, tmp_path / "one", batch_size=4, **QUIET)
    killed = []

    def kill_one(unit):
        if not killed:
            pids = runner.client.run(os.getpid)
            killed.append(next(iter(pids.values())))
            os.kill(killed[0], signal.SIGKILL)

    runner.on_unit_done = kill_one
    try:
        write_subtomograms(sim, 96, tmp_path / "dask", batch_size=4, specs=["1bxn"], runner=runner, **QUIET)
    finally:
        runner.on_unit_done = None
    assert killed
    assert _same_files(tmp_path / "one", tmp_path / "dask", "subtomo_*.mrc") == 96
    runner.client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for the tests after this one


# ---- picking and 2D embeddings -----------------------------------------------------------------------
def test_pick_and_embed_on_local_workers_equal_one_process(tmp_path, runner):
    from cryoshot.embedding.workflow import ClusterConfig, cluster_particles, embed_particles
    from cryoshot.picking.stage1 import Stage1Config
    from cryoshot.picking.workflow import PickConfig, pick

    cfg = MicrographConfig(size_px=160, pixel_size_A=10.0, particle_box_px=24, n_particles=20, snr=3.0, invert=True,
                           seed=5)  # fmt: skip
    simulate_micrographs(["1bxn"], tmp_path / "mics", cfg, 3, **QUIET)
    truth = read_star_table(tmp_path / "mics" / "coordinates.star")
    ex = truth[truth["rlnMicrographName"] == "mic_0000.mrc"].iloc[:6]
    write_star(tmp_path / "mics" / "ex.star", ex[["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]])
    mics = sorted(str(p) for p in (tmp_path / "mics").glob("mic_*.mrc"))
    pcfg = PickConfig(diameter_A=160.0, stage1=Stage1Config(steps=2))
    kw = {"progress": False, "log": lambda s: None}
    pick(mics, tmp_path / "mics" / "ex.star", tmp_path / "pick1", pcfg, **kw)
    pick(mics, tmp_path / "mics" / "ex.star", tmp_path / "pick2", pcfg, runner=runner, **kw)
    a, b = read_star_table(tmp_path / "pick1" / "picks.star"), read_star_table(tmp_path / "pick2" / "picks.star")
    assert len(a) > 0 and len(a) == len(b)
    np.testing.assert_allclose(a["rlnCoordinateX"].to_numpy(float), b["rlnCoordinateX"].to_numpy(float), atol=1e-3)
    np.testing.assert_allclose(a["rlnAutopickFigureOfMerit"].to_numpy(float),
                               b["rlnAutopickFigureOfMerit"].to_numpy(float), atol=1e-5)  # fmt: skip

    pcfg2 = ProjectionConfig(box_px=32, pixel_size_A=10.0, n_views=2, seed=4)
    simulate_projections(["1bxn"], tmp_path / "proj", pcfg2, 20, **QUIET)
    _, z1 = embed_particles(tmp_path / "proj" / "particles.star", tmp_path / "e1", **QUIET)
    _, z2 = embed_particles(tmp_path / "proj" / "particles.star", tmp_path / "e2", runner=runner, **QUIET)
    assert z1.shape == (40, 256)
    np.testing.assert_allclose(z1, z2, atol=1e-5)
    ccfg = ClusterConfig(k=2, refine_iterations=0)
    c1 = cluster_particles(tmp_path / "proj" / "particles.star", tmp_path / "c1", ccfg, **QUIET)
    c2 = cluster_particles(tmp_path / "proj" / "particles.star", tmp_path / "c2", ccfg, runner=runner, **QUIET)
    np.testing.assert_array_equal(c1.labels, c2.labels)
    np.testing.assert_allclose(np.load(tmp_path / "c1" / "embeddings.npy"), np.load(tmp_path / "c2" / "embeddings.npy"),
                               atol=1e-5)  # fmt: skip


def test_cli_scheduler_option_runs_a_verb_on_a_local_cluster(tmp_path, capsys):
    base = ["simulate", "projections", "-s", "1bxn", "--box", "32", "--angpix", "10", "--views", "2",
            "--per-class", "10", "--seed", "2"]  # fmt: skip
    assert main([*base, "-o", str(tmp_path / "one")]) == 0
    assert main([*base, "-o", str(tmp_path / "dask"), "--scheduler", "local:2"]) == 0
    assert "dask: local:2 scheduler at" in capsys.readouterr().out
    _same_files(tmp_path / "one", tmp_path / "dask", "particles.mrcs")
    assert main([*base, "-o", str(tmp_path / "x"), "--scheduler", "mpi"]) == 2
    assert "--scheduler must be" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "x", ignore_errors=True)


def test_extract_on_local_workers_equals_one_process(tmp_path, runner):
    from cryoshot.io.extract import extract_particles
    from cryoshot.io.mrc import write_mrc

    rng = np.random.default_rng(0)
    rows = []
    for t in range(3):  # three tomograms: three units
        write_mrc(tmp_path / f"tomo{t}.mrc", rng.normal(size=(24, 40, 40)).astype(np.float32), 10.0)
        rows += [{"rlnTomoName": f"tomo{t}.mrc", "rlnCoordinateX": float(x), "rlnCoordinateY": float(y),
                  "rlnCoordinateZ": 12.0, "rlnClassNumber": t + 1} for x, y in rng.uniform(0, 40, (5, 2))]  # fmt: skip
    write_star(tmp_path / "coords.star", pd.DataFrame(rows))
    for dim in (3, 2):
        star = tmp_path / "coords.star"
        if dim == 2:
            for t in range(3):
                write_mrc(tmp_path / f"mic{t}.mrc", rng.normal(size=(40, 40)).astype(np.float32), 10.0)
            write_star(tmp_path / "coords2.star", pd.DataFrame(rows).drop(columns=["rlnTomoName", "rlnCoordinateZ"])
                       .assign(rlnMicrographName=[r["rlnTomoName"].replace("tomo", "mic") for r in rows]))  # fmt: skip
            star = tmp_path / "coords2.star"
        a = extract_particles(star, tmp_path / f"one{dim}", 8, dim=dim, edge="skip", progress=False)
        b = extract_particles(star, tmp_path / f"dask{dim}", 8, dim=dim, edge="skip", progress=False, runner=runner)
        assert 0 < len(a.table) < 15 and a.n_skipped == b.n_skipped  # some boxes leave the data and are skipped
        pd.testing.assert_frame_equal(a.table, b.table)
        _same_files(tmp_path / f"one{dim}", tmp_path / f"dask{dim}", "subtomo_*.mrc" if dim == 3 else "*.mrcs")


def test_an_existing_scheduler_by_address(tmp_path, runner):
    """tcp://HOST:PORT connects to a running scheduler (here the module's LocalCluster) and leaves it running."""
    address = runner.client.scheduler.address
    assert address.startswith("tcp://")
    lines = []
    pcfg = ProjectionConfig(box_px=32, pixel_size_A=10.0, n_views=2, seed=9)
    simulate_projections(["1bxn"], tmp_path / "one", pcfg, 10, **QUIET)
    with open_runner(address, log=lines.append) as r:
        simulate_projections(["1bxn"], tmp_path / "tcp", pcfg, 10, runner=r, **QUIET)
    assert lines and address in lines[0]
    _same_files(tmp_path / "one", tmp_path / "tcp", "particles.mrcs")
    assert runner.client.run(lambda: 1)  # the scheduler and its workers are still there


def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    argv = ["simulate", "projections", "-s", "1bxn", "--box", "32", "--views", "1", "--per-class", "3",
            "-o", str(tmp_path / "o"), "--device", "cuda"]  # fmt: skip
    assert main(argv) == 2
    assert "no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "o").exists()
