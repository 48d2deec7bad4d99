"""The CLI, in-process (cryoshot.cli.main) and once through the installed command."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoshot.cli import main
from cryoshot.io.mrc import read_mrc, write_mrc
from cryoshot.io.particles import load_subtomogram_set
from cryoshot.io.star import read_star_table, write_star

SMALL = ["--box", "24", "--angpix", "16", "--per-class", "3"]


def test_simulate_subtomograms_snr_with_save_clean(tmp_path, capsys):
    out = tmp_path / "set"
    rc = main(["simulate", "subtomograms", "-s", "1bxn,3cf3", "-o", str(out), *SMALL, "--snr", "0.05",
               "--save-clean", "--preview", str(tmp_path / "p.png")])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    s = load_subtomogram_set(out / "particles.star", progress=False)
    assert len(s) == 6 and s.box == 24 and s.voxel_size_A == 16.0
    assert sorted(set(s.labels)) == [1, 2]
    for name, vol in zip(s.table["rlnImageName"], s.volumes, strict=True):
        clean = read_mrc(out / name.replace(".mrc", "_clean.mrc")).data
        assert clean.var() / (vol - clean).var() == pytest.approx(0.05, rel=0.02)
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst"} <= set(s.table.columns)


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "set"
    args = ["simulate", "subtomograms", "-s", "1bxn", "-o", str(out), *SMALL]
    assert main(args) == 0
    before = (out / "particles.star").read_text()
    assert main([*args, "--seed", "9"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "particles.star").read_text() == before
    assert main([*args, "--seed", "9", "--force"]) == 0
    assert (out / "particles.star").read_text() != before
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no temporary folders left


@pytest.mark.parametrize(
    "args,msg",
    [
        (["simulate", "subtomograms", "-s", "1bxn", "--snr", "0"], "--snr"),
        (["simulate", "subtomograms", "-s", "1bxn", "--snr", "-0.1"], "--snr"),
        (["simulate", "subtomograms", "-s", ","], "structure list is empty"),
        (["simulate", "subtomograms", "-s", "nosuch"], "unknown structure"),
        (["simulate", "micrographs", "-s", "1bxn", "--snr", "0"], "--snr"),
        (["simulate", "projections", "-s", "1bxn", "--views", "0"], "--views"),
        (["simulate", "micrographs", "-s", "1bxn", "--structural-noise", "1.5"], "--structural-noise"),
        (["simulate", "projections", "-s", "1bxn", "--mtf-nyquist", "0"], "--mtf-nyquist"),
    ],
)
def test_bad_simulation_input(tmp_path, capsys, args, msg):
    assert main([*args, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1  # one line
    assert not (tmp_path / "o").exists()


def test_micrographs_and_projections(tmp_path):
    args = ["-o", str(tmp_path / "m"), "-n", "2", "--size", "256", "--particle-box", "32", "--angpix", "8"]
    args += ["--particles", "8", "--carbon-edge", "--ice-blobs", "1", "--preview", str(tmp_path / "m.png")]
    args += ["--structural-noise", "0.5", "--mtf-nyquist", "0.6", "--ice-texture", "0.8"]
    assert main(["simulate", "micrographs", "-s", "1bxn", *args]) == 0
    df = read_star_table(tmp_path / "m" / "coordinates.star")
    assert set(df["rlnMicrographName"]) == {"mic_0000.mrc", "mic_0001.mrc"}
    assert read_mrc(tmp_path / "m" / "mic_0000.mrc").data.shape == (256, 256)
    assert main(["simulate", "projections", "-s", "1bxn,3cf3", "-o", str(tmp_path / "p"), "--box", "32",
                 "--angpix", "8", "--views", "2", "--per-class", "3", "--structural-noise", "0.3"]) == 0  # fmt: skip
    df = read_star_table(tmp_path / "p" / "particles.star")
    assert len(df) == 12 and df["rlnClassNumber"].nunique() == 4
    assert read_mrc(tmp_path / "p" / "particles.mrcs").data.shape == (12, 32, 32)


def test_extract_round_trip_and_errors(tmp_path, capsys):
    # micrographs -> extract 2D boxes at the ground-truth coordinates
    main(["simulate", "micrographs", "-s", "1bxn", "-o", str(tmp_path / "m"), "-n", "1", "--size", "256",
          "--particle-box", "32", "--angpix", "8", "--particles", "6"])  # fmt: skip
    assert (
        main(
            [
                "extract",
                str(tmp_path / "m" / "coordinates.star"),
                "-o",
                str(tmp_path / "x"),
                "--box",
                "32",
                "--2d",
            ]
        )
        == 0
    )
    assert read_mrc(tmp_path / "x" / "particles.mrcs").data.shape[1:] == (32, 32)
    assert main(["extract", str(tmp_path / "none.star"), "-o", str(tmp_path / "y"), "--box", "32"]) == 2
    assert "does not exist" in capsys.readouterr().err
    write_mrc(tmp_path / "t.mrc", np.zeros((20, 20, 20), np.float32), 10.0)
    write_star(tmp_path / "c.star", pd.DataFrame({"rlnCoordinateX": [5.0], "rlnCoordinateY": [5.0]}))
    assert (
        main(
            [
                "extract",
                str(tmp_path / "c.star"),
                "-o",
                str(tmp_path / "y"),
                "--box",
                "8",
                "--tomogram",
                str(tmp_path / "t.mrc"),
            ]
        )
        == 2
    )
    assert "rlnCoordinateZ" in capsys.readouterr().err
    (tmp_path / "bad.star").write_text("data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1.0\n")
    assert main(["extract", str(tmp_path / "bad.star"), "-o", str(tmp_path / "y"), "--box", "8"]) == 2


def test_installed_command(tmp_path):
    exe = Path(sys.executable).parent / "cryoshot"
    assert exe.exists(), "the console script is not installed; run `make test`"
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("cryoshot ")
    r = subprocess.run([str(exe), "structures"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "1bxn" in r.stdout
    r = subprocess.run(
        [str(exe), "simulate", "subtomograms", "-s", "1bxn", "--snr", "0", "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "'--snr'" in r.stderr and "Traceback" not in r.stderr


def test_help_works_on_an_ascii_terminal():
    import os

    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C", "LANG": "C"}
    for verb in (["train", "--help"], ["simulate", "subtomograms", "--help"], ["--help"]):
        r = subprocess.run([sys.executable, "-m", "cryoshot.cli", *verb], capture_output=True, text=True, env=env,
                           timeout=120)  # fmt: skip
        assert r.returncode == 0 and "Traceback" not in r.stderr and "Usage" in r.stdout, r.stderr


def test_internal_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import cryoshot.simulate.structures as structures

    def boom():
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(structures, "bundled_structure_names", boom)
    assert main(["structures"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cryoshot: internal error: ZeroDivisionError: a bug") and "Traceback" not in err
    assert main(["structures", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_help_lists_every_method(capsys):
    from cryoshot.fewshot.methods import METHOD_NAMES

    for verb in ("evaluate", "classify"):
        assert main([verb, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert all(m in text for m in METHOD_NAMES), text


def test_average_suggests_the_column_classify_writes(tmp_path, capsys):
    star = tmp_path / "p.star"
    write_star(star, pd.DataFrame({"rlnImageName": ["a.mrc"], "cryoshotPredictedClass": ["1"]}))
    assert main(["average", str(star), "-o", str(tmp_path / "avg")]) == 2
    assert "--class-column cryoshotPredictedClass" in capsys.readouterr().err
