"""Safe output: never overwrite without ``force``, write to a temporary name, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryoshot.errors import CryoshotError


def check_output_free(path: str | os.PathLike, force: bool) -> Path:
    """Raise if ``path`` exists and ``force`` is false; return it as a Path."""
    path = Path(path)
    if path.exists() and not force:
        raise CryoshotError(f"{path} already exists; choose another output or pass --force to overwrite it")
    if not path.parent.exists():
        raise CryoshotError(f"output folder {path.parent} does not exist; create it first")
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    The temporary name keeps the real suffix so format-sniffing writers work.
    """
    path = check_output_free(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # writers such as mrcfile refuse to overwrite an existing file
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if not tmp_path.exists():
            raise RuntimeError(f"writer did not create {tmp_path}")
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it onto ``path`` on success.

    With ``force`` an existing ``path`` is replaced only after the new output is
    complete, so a failed run never destroys the previous result.
    """
    path = check_output_free(path, force)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp_path
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp_path, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_path, path)
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise
