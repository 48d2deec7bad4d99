"""STAR files through starfile, in RELION's conventions.

RELION 3.1+ files hold an ``optics`` and a ``particles`` block; older files hold a
single table. :func:`read_star_table` returns the particle table either way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import starfile

from cryoshot.errors import CryoshotError
from cryoshot.utils.files import atomic_file


def read_star_blocks(path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Read every data block of a STAR file as ``{name: DataFrame}``."""
    path = Path(path)
    if not path.is_file():
        raise CryoshotError(f"STAR file {path} does not exist; check the path")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises many types on malformed input
        raise CryoshotError(f"cannot parse STAR file {path}: {exc}") from exc
    tables = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    if not tables:
        raise CryoshotError(f"STAR file {path} has no data table (no 'loop_' block); is it a STAR file?")
    return tables


def read_star_table(path: str | os.PathLike, block: str | None = None) -> pd.DataFrame:
    """Read the particle table of a STAR file.

    Parameters
    ----------
    path
        STAR file.
    block
        Block name to read; default ``particles`` when present, else the only
        (or first non-optics) table.
    """
    tables = read_star_blocks(path)
    if block is not None:
        if block not in tables:
            raise CryoshotError(f"STAR file {path} has no block '{block}'; it has: {', '.join(tables)}")
        return tables[block]
    if "particles" in tables:
        return tables["particles"]
    rest = [k for k in tables if k != "optics"] or list(tables)
    return tables[rest[0]]


def require_columns(df: pd.DataFrame, columns: list[str], path: str | os.PathLike) -> None:
    """Raise a clear error naming the columns of ``columns`` missing in ``df``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        have = ", ".join(map(str, df.columns)) or "none"
        raise CryoshotError(f"STAR file {path} lacks column(s) {', '.join(missing)}; it has: {have}")


def write_star(
    path: str | os.PathLike,
    table: pd.DataFrame | dict[str, pd.DataFrame],
    *,
    force: bool = False,
) -> Path:
    """Write a table (block ``particles``) or several named blocks atomically."""
    blocks = {"particles": table} if isinstance(table, pd.DataFrame) else dict(table)
    with atomic_file(path, force=force) as tmp:
        starfile.write(blocks, tmp, overwrite=True)
    return Path(path)
