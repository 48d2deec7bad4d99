"""Outputs are never lost or half-written, and --force never deletes a user's files."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cryoshot.errors import CryoshotError
from cryoshot.io.mrc import read_mrc
from cryoshot.utils.files import MANIFEST, atomic_dir, atomic_file, output_lock

SIM = [sys.executable, "-m", "cryoshot.cli", "simulate", "subtomograms", "-s", "1bxn", "--box", "24",
       "--angpix", "16"]  # fmt: skip


def _write(folder: Path, names=("a.txt", "sub/b.txt")):
    for n in names:
        (folder / n).parent.mkdir(parents=True, exist_ok=True)
        (folder / n).write_text(n)


def test_force_replaces_cryoshot_output_but_never_a_users_files(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        _write(tmp)
    assert json.loads((out / MANIFEST).read_text())["files"] == ["a.txt", "sub/b.txt"]
    with pytest.raises(CryoshotError, match="already exists"):
        with atomic_dir(out) as tmp:
            _write(tmp)
    with atomic_dir(out, force=True) as tmp:  # only cryoshot's files: replaced
        _write(tmp, ["c.txt"])
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "c.txt"]
    (out / "important.txt").write_text("precious")
    with pytest.raises(CryoshotError, match="important.txt"):
        with atomic_dir(out, force=True) as tmp:
            _write(tmp)
    assert (out / "important.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing temporary left


def test_force_refuses_a_folder_without_manifest_and_the_current_folder(tmp_path, monkeypatch):
    user = tmp_path / "precious"
    user.mkdir()
    (user / "data.mrc").write_text("x")
    with pytest.raises(CryoshotError, match="did not write"):
        with atomic_dir(user, force=True):
            pass
    assert (user / "data.mrc").exists()
    monkeypatch.chdir(user)
    for p in (Path("."), user, tmp_path):
        with pytest.raises(CryoshotError, match="current, home or root"):
            with atomic_dir(p, force=True):
                pass
    assert (user / "data.mrc").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_nested_outputs_can_be_replaced_with_force(tmp_path):
    out = tmp_path / "demo"
    for _ in range(2):
        with atomic_dir(out, force=True) as tmp:
            _write(tmp, ["top.png"])
            with atomic_dir(tmp / "inner") as inner:  # e.g. the demo's simulated set
                _write(inner, ["a.mrc"])
    assert (out / "inner" / "a.mrc").exists() and (out / "inner" / MANIFEST).exists()


def test_empty_folder_may_be_filled(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty", force=True) as tmp:
        _write(tmp, ["x.txt"])
    assert (tmp_path / "empty" / "x.txt").exists()


def test_file_and_folder_kinds(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    with pytest.raises(CryoshotError, match="is a file, not a folder"):
        with atomic_dir(tmp_path / "f", force=True):
            pass
    with pytest.raises(CryoshotError, match="is a folder"):
        with atomic_file(tmp_path / "d", force=True):
            pass
    with pytest.raises(CryoshotError, match="does not exist"):
        with atomic_file(tmp_path / "missing" / "x.star"):
            pass


def test_failure_leaves_previous_output_and_no_temporaries(tmp_path):
    target = tmp_path / "t.star"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, force=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.star"]


def test_full_disk_is_one_clear_error(tmp_path):
    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CryoshotError, match="disk .* is full"):
        with atomic_dir(tmp_path / "o") as tmp:
            full(tmp)
    with pytest.raises(CryoshotError, match="disk .* is full"):
        with atomic_file(tmp_path / "o.star") as tmp:
            full(tmp)
    assert list(tmp_path.iterdir()) == []


def test_created_output_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "o") as tmp:
            _write(tmp, ["x.txt"])
        with atomic_file(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "o").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


def test_lock_is_exclusive_between_processes_and_stale_locks_are_cleaned(tmp_path):
    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom cryoshot.utils.files import output_lock\n"
        f"with output_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(30)\n")],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CryoshotError, match=f"pid {holder.pid}"):
            with output_lock(out):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    (tmp_path / ".o.123.abc.tmp").mkdir()  # what a killed writer leaves
    with output_lock(out):  # the holder was killed: its lock is stale
        pass
    assert list(tmp_path.iterdir()) == []


def test_two_simultaneous_writers_one_wins_whole(tmp_path):
    out = tmp_path / "same"
    procs = [subprocess.Popen([*SIM, "--per-class", "40", "-o", str(out), "--seed", str(s)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (1, 2)]  # fmt: skip
    res = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in res)
    assert codes == [0, 2], res
    loser = next(e for c, e in res if c == 2)
    assert "cryoshot: error:" in loser and ("another cryoshot" in loser or "already exists" in loser), loser
    assert len(list(out.glob("subtomo_*.mrc"))) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same"]


def test_killed_simulate_leaves_no_output_and_next_run_cleans_up(tmp_path):
    out = tmp_path / "killed"
    partial = tmp_path / ".killed.cryoshot-partial"
    p = subprocess.Popen([*SIM, "--per-class", "5000", "-o", str(out)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 60
    while not any(partial.glob("items_*.json")) and time.time() < deadline:  # a first unit finished
        time.sleep(0.1)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists()
    assert any(partial.glob("items_*.json"))  # a SIGKILL cannot clean up; the finished units wait for --continue
    r = subprocess.run([*SIM, "--per-class", "1", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "unfinished run" in r.stdout + r.stderr  # ... so the next run into the same place clears it, and says so
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed"]


def test_terminated_simulate_keeps_finished_units_and_continue_completes(tmp_path):
    """SIGTERM (what SLURM sends before a kill): no output, no stray files, the finished units kept for --continue."""
    out = tmp_path / "term"
    partial = tmp_path / ".term.cryoshot-partial"
    argv = [*SIM, "--per-class", "1500", "-o", str(out)]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(list(partial.glob("items_*.json"))) < 2 and time.time() < deadline:
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    assert p.returncode != 0
    assert [q.name for q in tmp_path.iterdir()] == [partial.name]
    done = {q.name for q in partial.glob("items_*.json")}
    assert len(done) >= 2 and not list(partial.glob(".*tmp*"))
    first = partial / "subtomo_000000.mrc"  # made by the first unit, before the signal
    made = first.stat().st_mtime_ns
    r = subprocess.run([*argv, "--continue"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("subtomo_*.mrc"))) == 1500 and not partial.exists()
    fresh = subprocess.run([*SIM, "--per-class", "1500", "-o", str(tmp_path / "fresh")], capture_output=True)
    assert fresh.returncode == 0
    for i in (0, 700, 1499):  # the continued set equals an uninterrupted one
        name = f"subtomo_{i:06d}.mrc"
        np.testing.assert_array_equal(read_mrc(out / name).data, read_mrc(tmp_path / "fresh" / name).data)
    assert (out / first.name).stat().st_mtime_ns == made  # a finished unit was not computed again
