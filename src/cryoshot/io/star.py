"""STAR files through starfile, in RELION's conventions.

RELION 3.1+ files hold an ``optics`` and a ``particles`` block; older files hold a
single table. :func:`read_star_table` returns the particle table either way.

starfile reads a row with missing values (a file cut short, a damaged line)
without complaint, filling NaN or ``''``; :func:`read_star_blocks` counts the
values on such rows itself and refuses the file.
"""

from __future__ import annotations

import io
import linecache
import os
import re
import tokenize
from pathlib import Path

import pandas as pd
import starfile

from cryoshot.errors import CryoshotError
from cryoshot.io.mrc import require_input_file
from cryoshot.utils.files import atomic_file
from cryoshot.utils.workunits import cached, file_key

# one value of a loop row as pandas splits it (whitespace-separated, '"' quotes at
# the start of a value, '#' starts a comment); starfile turns ' into " first
_VALUE = re.compile(r'"[^"]*"?|[^ \t#]+|#')


def _count_values(line: str) -> int:
    n = 0
    for m in _VALUE.finditer(line.replace("'", '"')):
        if m.group() == "#":
            break
        n += 1
    return n


def _loop_rows(text: str) -> dict[str, tuple[int, list[tuple[int, int]]]]:
    """Split the text into blocks the way starfile does.

    Returns ``{block: (number of columns, [(line number, number of values), ...])}``
    for every loop block, one entry per data row (blank and comment lines skipped);
    a last block with nothing after its ``data_`` line gets -1 columns.
    """
    lines = [s.strip() for s in text.split("\n")]
    n = len(lines)
    blocks: dict[str, tuple[int, list[tuple[int, int]]]] = {}
    i = 0
    while i < n:
        if not lines[i].startswith("data_"):
            i += 1
            continue
        name = lines[i][5:]
        i += 1
        while i < n and not lines[i].startswith(("loop_", "_")):
            i += 1
        if i >= n:
            blocks[name] = (-1, [])
            break
        if lines[i].startswith("_"):  # a key-value block, not a table
            blocks.pop(name, None)
            while i < n and not lines[i].startswith("data"):
                i += 1
            continue
        i += 1
        n_cols = 0
        while i < n and lines[i].startswith("_"):
            n_cols += 1
            i += 1
        rows = []
        while i < n and not lines[i].startswith("data_"):
            if lines[i] and not lines[i].startswith("#"):
                rows.append((i + 1, _count_values(lines[i])))
            i += 1
        blocks[name] = (n_cols, rows)
    return blocks


def _bad_row_message(path: Path, block: str, line: int, row: int, n_values: int, n_cols: int) -> str:
    if n_values < n_cols:
        why = "the file is truncated or the row is damaged; export or copy it again"
    else:
        why = "the row is damaged, or a value with spaces lacks quotes; fix that line"
    return (
        f"STAR file {path}: row {row} (line {line}) of block '{block}' has {n_values} value(s) but the block has "
        f"{n_cols} column(s); {why}"
    )


def _check_rows(path: Path, text: str, tables: dict[str, pd.DataFrame]) -> None:
    """Refuse tables where starfile filled missing values of a short row."""
    suspects = {}
    for name, df in tables.items():
        missing = df.isna() | (df == "")
        if missing.to_numpy().any():
            suspects[name] = missing
    if not suspects:
        return
    layout = _loop_rows(text)
    for name, missing in suspects.items():
        n_cols, rows = layout.get(name, (0, []))
        if n_cols != missing.shape[1] or len(rows) != missing.shape[0]:
            continue  # the rows cannot be matched to lines (e.g. a quoted value over two lines)
        for r, (line, n_values) in enumerate(rows):
            if n_values < n_cols and missing.iloc[r, n_values:].all():
                raise CryoshotError(_bad_row_message(path, name, line, r + 1, n_values, n_cols))


def _check_last_rows(path: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Refuse a numeric column whose last value is not a number (a value cut short: ``-``, ``1.5e``)."""
    for name, df in tables.items():
        if len(df) < 2:
            continue
        for c in df.columns:
            col = df[c]
            if pd.api.types.is_numeric_dtype(col) or _number(col.iloc[-1]) or not _number(col.iloc[0]):
                continue  # the cheap checks first: most text columns stop here
            if pd.to_numeric(col.iloc[:-1], errors="coerce").notna().all():
                raise CryoshotError(
                    f"STAR file {path}: the last value of column {c} in block '{name}' is {col.iloc[-1]!r}, "
                    "not a number like the rest of the column; the file is truncated or the row is damaged; "
                    "export or copy it again"
                )


def _number(v: object) -> bool:
    return bool(pd.notna(pd.to_numeric(pd.Series([v]), errors="coerce")).all())


def _parse_error(path: Path, text: str, exc: Exception) -> CryoshotError:
    """Explain why starfile failed: a row of the wrong length, or its own message."""
    for name, (n_cols, rows) in _loop_rows(text).items():
        if n_cols < 0:
            return CryoshotError(
                f"STAR file {path}: block '{name}' is empty (nothing follows 'data_{name}'); "
                "the file is truncated; export or copy it again"
            )
        for r, (line, n_values) in enumerate(rows):
            if n_values != n_cols:
                return CryoshotError(_bad_row_message(path, name, line, r + 1, n_values, n_cols))
    return CryoshotError(f"cannot parse STAR file {path}: {exc}; is it a STAR file, complete and unedited?")


def _read_text(path: Path) -> str:
    """The file's text as starfile (through linecache) sees it, or a clear error."""
    try:
        raw = path.read_bytes()
    except OSError as exc:  # unreadable (permissions), or gone since the check
        raise CryoshotError(f"cannot read STAR file {path}: {exc.strerror or exc}; check the file") from exc
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        text = raw.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
        raise CryoshotError(f"STAR file {path} is not UTF-8 text ({exc}); is it a STAR file?") from exc
    if "\r" in text.replace("\r\n", ""):
        # starfile counts lines by '\n' but reads them by any line ending: it would drop rows
        raise CryoshotError(
            f"STAR file {path} has old Mac line endings (a bare carriage return); "
            "convert it to Unix line endings (e.g. mac2unix) and try again"
        )
    return text.replace("\r\n", "\n")


def read_star_blocks(path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Read every data table (loop block) of a STAR file as ``{name: DataFrame}``.

    Parameters
    ----------
    path
        STAR file.

    Raises
    ------
    CryoshotError
        Missing file or a folder; not UTF-8 text; bare carriage-return line
        endings; no loop block; a row with fewer or more values than its block
        has columns, or a numeric column whose last value is not a number (a
        truncated or damaged file); anything starfile cannot parse.

    Notes
    -----
    A file cut inside its last value (``2.25`` cut to ``2.2``, ``TS_01`` to
    ``TS_0``) still has complete rows and cannot be told from an intact file
    (RELION and starfile end files with a newline, hand-written files may not);
    nor can a file cut at the end of a row, or inside a block's column list
    (a table with fewer rows or columns). Key-value (non-loop) blocks are skipped.
    """
    path = require_input_file(path, "STAR")
    text = _read_text(path)
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises many types on malformed input
        raise _parse_error(path, text, exc) from exc
    finally:
        linecache.clearcache()  # starfile reads through linecache: never keep a stale copy
    tables = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    if not tables:
        raise CryoshotError(f"STAR file {path} has no data table (no 'loop_' block); is it a STAR file?")
    _check_rows(path, text, tables)
    _check_last_rows(path, tables)
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

    Raises
    ------
    CryoshotError
        As :func:`read_star_blocks`; a missing ``block``; a file holding only an
        ``optics`` table (no particle table) when ``block`` is not given.
    """
    tables = read_star_blocks(path)
    if block is not None:
        if block not in tables:
            raise CryoshotError(f"STAR file {path} has no block '{block}'; it has: {', '.join(tables)}")
        return tables[block]
    if "particles" in tables:
        return tables["particles"]
    rest = [k for k in tables if k != "optics"]
    if not rest:
        raise CryoshotError(
            f"STAR file {path} holds only an 'optics' table and no particle table; it is truncated, "
            "or give the particles file"
        )
    return tables[rest[0]]


def _blocks_of(path: str, *_key) -> dict[str, pd.DataFrame]:
    return read_star_blocks(path)


def _table_of(path: str, *_key) -> pd.DataFrame:
    return read_star_table(path)


def read_star_blocks_once(path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """:func:`read_star_blocks`, parsed once per process for each version of the file.

    For work units that each take some rows of one large STAR file. The tables are shared
    between callers: read them, do not modify them.
    """
    return cached(_blocks_of, str(Path(path).resolve()), *file_key(require_input_file(path, "STAR")))


def read_star_table_once(path: str | os.PathLike) -> pd.DataFrame:
    """:func:`read_star_table`, parsed once per process for each version of the file (shared: do not modify)."""
    return cached(_table_of, str(Path(path).resolve()), *file_key(require_input_file(path, "STAR")))


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
