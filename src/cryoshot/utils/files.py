"""Safe output: never overwrite without ``force``, write to a temporary name, then rename.

Rules every writer in cryoshot follows through this module:

- An existing output is replaced only with ``force``, and a *folder* only when it holds
  nothing but what cryoshot wrote there (listed in its manifest, :data:`MANIFEST`) or
  nothing at all: ``--force`` never deletes a user's own files.
- Output is written under a temporary name beside the target and renamed into place when
  complete, so a failed or killed run leaves no partial output.
- One writer per output: a lock file beside the target (``.NAME.cryoshot-lock``, holding
  the writer's pid and host) makes a second cryoshot process writing the same output fail
  at once with a clear error. The lock of a killed run is stale (its pid is gone); the next
  run into the same place removes it and the killed run's temporary files, and says so.
- Created files and folders get the permissions the user's umask allows (``tempfile``
  alone would make them private).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cryoshot.errors import CryoshotError
from cryoshot.utils.runrecord import RUN_FILE, current_run, run_yaml

MANIFEST = ".cryoshot-output.json"
_LOCK_SUFFIX = ".cryoshot-lock"
_held_locks: dict[Path, int] = {}  # lock path -> depth (re-entrant within this process)
_private_dirs: set[Path] = set()  # temporary folders this process is filling (no locks needed inside)


def _abs(path: str | os.PathLike) -> Path:
    """Absolute path without resolving links: the one form in which private folders are kept and looked up."""
    return Path(os.path.abspath(path))


def _in_private_dir(path: Path) -> bool:
    """Whether ``path`` lies directly in a temporary folder this process is filling."""
    return _abs(path).parent in _private_dirs


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(path: Path, is_dir: bool) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}{_LOCK_SUFFIX}"


def _leftovers(path: Path) -> list[Path]:
    """Temporary files and folders that writers of ``path`` create beside it."""
    pats = [f".{path.name}.*.tmp", f".{path.name}.*.old", f".{path.name}.*.tmp{path.suffix}"]
    found = {p for pat in pats for p in path.parent.glob(pat)}
    return sorted(found)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


@contextlib.contextmanager
def private_folder(path: str | os.PathLike) -> Iterator[None]:
    """Declare ``path`` a folder only this run writes (its work units' folder): no per-file locks inside.

    The run holds the lock of the folder itself; a unit that a killed worker left half-done is
    simply written again, so locks on each file there would only get in the way.
    """
    p = _abs(path)
    added = p not in _private_dirs
    _private_dirs.add(p)
    try:
        yield
    finally:
        if added:
            _private_dirs.discard(p)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the one-writer lock of output ``path`` (re-entrant within a process).

    Raises
    ------
    CryoshotError
        Another live cryoshot process holds the lock.
    """
    path = _abs(path)
    if _in_private_dir(path):  # inside our own temporary folder: nobody else writes there
        yield
        return
    lock = _lock_path(path)
    if lock in _held_locks:
        _held_locks[lock] += 1
        try:
            yield
        finally:
            _held_locks[lock] -= 1
        return
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(50):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_s, host = (lock.read_text().split() + ["", ""])[:2]
                pid = int(pid_s)
            except (OSError, ValueError):
                pid, host = -1, ""
            if pid <= 0:  # just created and not yet written, or unreadable: stale only when old
                try:
                    age = time.time() - lock.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < 10:
                    time.sleep(0.05)
                    continue
            if pid > 0 and host == socket.gethostname() and _pid_alive(pid):
                raise CryoshotError(
                    f"another cryoshot process (pid {pid}) is writing {path}; wait for it to finish "
                    "or choose another output"
                ) from None
            if pid > 0 and host and host != socket.gethostname():
                raise CryoshotError(
                    f"{path} is being written by cryoshot on {host} (pid {pid}); if that run is dead, "
                    f"delete {lock} and retry"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its writer was killed
            continue
        except FileNotFoundError:
            raise CryoshotError(f"output folder {path.parent} does not exist; create it first") from None
        except OSError as exc:
            raise CryoshotError(f"cannot write into {path.parent}: {exc.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:  # pragma: no cover - a lock that stays empty
        raise CryoshotError(f"cannot take the write lock {lock}; delete it if no cryoshot is running")
    _held_locks[lock] = 1
    try:
        stale = _leftovers(path)  # we hold the lock, so these belong to killed runs
        if stale:
            for p in stale:
                _remove(p)
            print(
                f"cryoshot: removed {len(stale)} temporary file(s) left by an interrupted run into {path}",
                file=sys.stderr,
            )
        yield
    finally:
        _held_locks.pop(lock, None)
        lock.unlink(missing_ok=True)


def _refuse_special(path: Path) -> None:
    here = Path.cwd().resolve()
    real = path.resolve()
    if real == here or real in here.parents or real == Path(real.anchor) or real == Path.home().resolve():
        raise CryoshotError(
            f"refusing to use {path} as an output folder: it is the current, home or root folder "
            "(or holds it); name a new folder, e.g. -o results"
        )


def written_by_cryoshot(folder: Path) -> tuple[bool, str | None]:
    """Whether ``folder`` holds only files listed in its cryoshot manifest (or nothing).

    Returns (ok, first foreign file relative to ``folder`` or None).
    """
    manifest = folder / MANIFEST
    listed: set[str] = set()
    if manifest.is_file():
        try:
            listed = set(json.loads(manifest.read_text()).get("files", []))
        except (OSError, ValueError, AttributeError):
            listed = set()
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_dir() and not p.is_symlink():
            continue
        if p.name != MANIFEST and rel not in listed:  # nested outputs carry their own manifest
            return False, rel
    return True, None


def check_output_free(path: str | os.PathLike, force: bool, *, folder: bool = False) -> Path:
    """Check that output ``path`` may be written; return it as a Path.

    Parameters
    ----------
    path
        The output file (``folder=False``) or folder (``folder=True``).
    force
        Allow replacing an existing output: any single file, but a folder only when it
        holds nothing except what cryoshot wrote there.

    Raises
    ------
    CryoshotError
        The output exists (without ``force``), is of the wrong kind, holds files cryoshot
        did not write, or its parent folder is missing.
    """
    path = Path(path)
    if str(path) == "" or path.name in ("", ".", ".."):
        if folder:
            _refuse_special(path)
        raise CryoshotError(f"'{path}' is not a usable output name; give a file or folder name")
    if folder:
        _refuse_special(path)
    if path.exists() or path.is_symlink():
        if folder and not path.is_dir():
            raise CryoshotError(f"{path} exists and is a file, not a folder; choose another output folder")
        if not folder and path.is_dir():
            raise CryoshotError(f"{path} is a folder; the output here is a file: give a file name, e.g. {path}/out")
        if not force:
            raise CryoshotError(f"{path} already exists; choose another output or pass --force to overwrite it")
        if folder:
            ok, foreign = written_by_cryoshot(path)
            if not ok:
                raise CryoshotError(
                    f"{path} holds files cryoshot did not write (e.g. {foreign}); --force replaces only "
                    "cryoshot's own output folders. Choose another output, or move those files away first"
                )
    if not path.parent.exists():
        raise CryoshotError(f"output folder {path.parent} does not exist; create it first")
    if not path.parent.is_dir():
        raise CryoshotError(f"{path.parent} is a file, not a folder; choose another output location")
    return path


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    """Turn a full disk or a refused write while writing ``path`` into one clear CryoshotError."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CryoshotError(
                f"the disk holding {path.parent} is full (or over quota); free space or write elsewhere (nothing was kept)"
            ) from exc
        if exc.errno in _DISK_ERRNOS:
            raise CryoshotError(
                f"no permission to write {path}: {exc.strerror}; choose another output location"
            ) from exc
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    The temporary name keeps the real suffix so format-sniffing writers work.
    Without ``force`` the final step never replaces a file that appeared meanwhile.
    """
    path = check_output_free(path, force)
    with output_lock(path):
        if not _in_private_dir(path):  # again, under the lock (a private folder has no other writer)
            check_output_free(path, force)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)  # writers such as mrcfile refuse to overwrite an existing file
        tmp_path = Path(tmp)
        try:
            with _disk_errors(path):
                yield tmp_path
            if not tmp_path.exists():
                raise RuntimeError(f"writer did not create {tmp_path}")
            _apply_umask(tmp_path, is_dir=False)
            if force:
                os.replace(tmp_path, path)
            else:
                try:
                    os.link(tmp_path, path)  # fails if path appeared meanwhile: never clobber
                except FileExistsError:
                    raise CryoshotError(f"{path} was created by another program while cryoshot was writing it; "
                                        "nothing was replaced") from None  # fmt: skip
                except OSError:  # no hard links here: rename under the lock
                    if path.exists():
                        raise CryoshotError(
                            f"{path} appeared while cryoshot was writing it; nothing was replaced"
                        ) from None
                    os.replace(tmp_path, path)
                tmp_path.unlink(missing_ok=True)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise


def _write_manifest(folder: Path) -> None:
    from cryoshot import __version__

    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    (folder / MANIFEST).write_text(json.dumps({"written_by": f"cryoshot {__version__}", "files": files}, indent=1))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it onto ``path`` on success.

    With ``force`` an existing ``path`` is replaced only after the new output is
    complete, so a failed run never destroys the previous result, and only when it
    holds nothing but cryoshot's own output. The folder gets a manifest
    (:data:`MANIFEST`) listing the files written, so a later ``--force`` can tell
    them from a user's.
    """
    path = check_output_free(path, force, folder=True)
    with output_lock(path):
        check_output_free(path, force, folder=True)
        tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
        _apply_umask(tmp_path, is_dir=True)
        _private_dirs.add(_abs(tmp_path))
        try:
            with _disk_errors(path):
                yield tmp_path
                run = current_run.get()
                if run is not None and not _in_private_dir(path):  # top-level output only
                    (tmp_path / RUN_FILE).write_text(run_yaml(run), encoding="utf-8")
                _write_manifest(tmp_path)
            if path.exists():
                if not force:
                    raise CryoshotError(f"{path} was created by another program while cryoshot was writing it; "
                                        "nothing was replaced")  # fmt: skip
                check_output_free(path, force, folder=True)
                old = path.parent / f".{path.name}.{os.getpid()}.old"
                os.replace(path, old)
                os.replace(tmp_path, path)
                _remove(old)
            else:
                os.rename(tmp_path, path)
        except BaseException:
            shutil.rmtree(tmp_path, ignore_errors=True)
            raise
        finally:
            _private_dirs.discard(_abs(tmp_path))


def run_record_beside(output: str | os.PathLike, force: bool) -> Path | None:
    """``OUTPUT.run.yaml`` for a verb whose output is one file (None outside a command-line run).

    Checked now, so an existing record without ``force`` fails before any work.
    """
    if current_run.get() is None:
        return None
    output = Path(output)
    record = output.with_name(f"{output.name.rsplit('.', 1)[0]}.{RUN_FILE}")
    return check_output_free(record, force)


def write_run_record(record: Path, force: bool) -> None:
    """Write the current command-line run's settings to ``record`` atomically."""
    run = current_run.get()
    if run is not None:
        with atomic_file(record, force=force) as tmp:
            tmp.write_text(run_yaml(run), encoding="utf-8")
