"""A killed classify, average, simulate or extract leaves no partial output; two writers: one wins whole."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoshot.io.mrc import write_mrc
from cryoshot.io.star import write_star
from tests.fewshot.helpers import tiny_checkpoint, write_toy_set

CLI = [sys.executable, "-m", "cryoshot.cli"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("killdata")
    star = write_toy_set(root / "set", [0, 1, 2], per_class=20, seed=5)
    model = tiny_checkpoint(root / "tiny.pt")
    tomo = root / "tomo.mrc"
    write_mrc(tomo, np.random.default_rng(0).standard_normal((64, 64, 64)).astype(np.float32), 10.0)
    rng = np.random.default_rng(1)
    coords = pd.DataFrame(rng.uniform(8, 56, size=(3000, 3)), columns=["rlnCoordinateX", "rlnCoordinateY",
                                                                       "rlnCoordinateZ"])  # fmt: skip
    write_star(root / "coords.star", coords)
    return {"star": star, "model": model, "tomo": tomo, "coords": root / "coords.star"}


def _argv(verb: str, d, out: Path, slow: bool = True) -> list[str]:
    """Arguments of a run long enough to be killed mid-way (``slow``; template matching for classify)."""
    return {
        "simulate": ["simulate", "subtomograms", "-s", "1bxn", "--box", "24", "--per-class", "5000", "-o", str(out)],
        "extract": ["extract", str(d["coords"]), "--box", "16", "--tomogram", str(d["tomo"]), "-o", str(out)],
        "classify": ["classify", "--support", str(d["star"]), "--query", str(d["star"]), "--model", str(d["model"]),
                     "-o", str(out), *(["--method", "template"] if slow else [])],
        "average": ["average", str(d["star"]), "-o", str(out), "--angular-step", "20", "--iterations", "3"],
    }[verb]  # fmt: skip


@pytest.mark.parametrize("verb", ["simulate", "extract", "classify", "average"])
def test_killed_run_leaves_no_output(tmp_path, data, verb):
    out = tmp_path / ("out.star" if verb == "classify" else "out")
    p = subprocess.Popen([*CLI, *_argv(verb, data, out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    # kill while it works: once it writes (its lock and temporary output appear), or after 3 s (imports done)
    while time.time() < t0 + 3 and p.poll() is None and not any(tmp_path.glob(".*")):
        time.sleep(0.05)
    time.sleep(0.3)
    assert p.poll() is None, f"{verb} finished before it could be killed: {p.stderr.read()}"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists()
    visible = [q.name for q in tmp_path.iterdir() if not q.name.startswith(".")]
    assert visible == []


def test_two_classify_writers_one_wins_whole(tmp_path, data):
    out = tmp_path / "pred.star"
    procs = [subprocess.Popen([*CLI, *_argv("classify", data, out, slow=False)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]  # fmt: skip
    res = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(c for c, _ in res) == [0, 2], res
    loser = next(e for c, e in res if c == 2)
    assert "cryoshot: error:" in loser and "Traceback" not in loser
    assert sorted(q.name for q in tmp_path.iterdir()) == ["pred.run.yaml", "pred.star"]  # the winner and its run record
