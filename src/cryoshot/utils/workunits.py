"""Work units: a verb's per-item work, each unit a pure function of its arguments that writes one result file.

A verb that works item by item (``pick`` per micrograph, ``classify`` per chunk of queries,
``simulate`` per chunk of items, ``extract`` per source) describes its work as a list of
:class:`WorkUnit`. A runner executes the units: :class:`SerialRunner` in this process
(the default), or ``cryoshot.distributed.DaskRunner`` on Dask workers. Both follow one
contract, so the output does not depend on where it was computed:

- a unit is ``fn(*args, out=path)``: ``fn`` is a module-level function, ``args`` are small
  and picklable (paths, numbers, configs; never large arrays), and the unit's randomness is
  a pure function of (seed, unit);
- ``fn`` writes its result to ``out`` atomically and last, so a unit whose ``out`` exists is
  complete, and a rerun (``--continue``) runs only the units without one;
- a unit that raises is reported with its item; the other units still run; the verb
  assembles its output only when every unit is complete (:class:`UnitsFailed` otherwise).

Heavy state a unit needs (a model, loaded structures) is loaded once per process through
:func:`cached`, keyed by the file and its modification time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from cryoshot.errors import CryoshotError
from cryoshot.utils.files import output_lock, private_folder

PARTIAL_MARK = "cryoshot-partial.json"
DEVICE = "cpu"  # where units put their models: set by the runner in each process (--device)


@dataclass(frozen=True)
class WorkUnit:
    """One unit of a verb's work.

    Attributes
    ----------
    key : file-safe name, unique within the run (e.g. ``mic_0003``, ``rows_000000``)
    item : what the unit works on, as a user names it in an error ("micrograph mic_0003.mrc")
    fn : module-level function called as ``fn(*args, out=out)``
    args : small picklable arguments (paths, numbers, configs)
    out : the result file ``fn`` writes last and atomically; its existence means "done"
    """

    key: str
    item: str
    fn: Callable[..., None]
    args: tuple
    out: Path

    def done(self) -> bool:
        return self.out.exists()


@dataclass(frozen=True)
class UnitFailure:
    key: str
    item: str
    error: str


class UnitsFailed(CryoshotError):
    """Some units raised; the others finished and their results are kept for ``--continue``."""

    def __init__(self, failures: Sequence[UnitFailure], total: int, hint: str = "") -> None:
        self.failures = list(failures)
        first = "; ".join(f"{f.item}: {f.error}" for f in self.failures[:3])
        more = f" (and {len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
        super().__init__(
            f"{len(self.failures)} of {total} work units failed: {first}{more}. The other units finished and are "
            f"kept; fix the cause and rerun the same command with --continue to compute only the missing units"
            + (f" ({hint})" if hint else "")
        )


class Runner(Protocol):
    """Executes work units (in this process or elsewhere); raises :class:`UnitsFailed` after all have run."""

    def run(self, units: Sequence[WorkUnit], *, desc: str = "units", progress: bool = True) -> None: ...


def error_text(exc: BaseException) -> str:
    """One line for a unit's error: the message of a CryoshotError, else the type and message."""
    msg = " ".join(str(exc).split())[:300]
    return msg if isinstance(exc, CryoshotError) else f"{type(exc).__name__}: {msg}"


class SerialRunner:
    """Runs the pending units one after another in this process, with a progress bar."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def run(self, units: Sequence[WorkUnit], *, desc: str = "units", progress: bool = True) -> None:
        global DEVICE
        DEVICE = self.device
        pending = [u for u in units if not u.done()]
        failures = []
        for u in tqdm(pending, desc=desc, unit="unit", disable=not progress or len(pending) < 2, leave=False):
            try:
                with private_folder(u.out.parent):
                    u.fn(*u.args, out=u.out)
            except (KeyboardInterrupt, SystemExit, MemoryError):
                raise
            except Exception as exc:  # reported with its item after the others have run
                failures.append(UnitFailure(u.key, u.item, error_text(exc)))
        if failures:
            raise UnitsFailed(failures, len(units))


def runner_or_serial(runner: Runner | None) -> Runner:
    return SerialRunner() if runner is None else runner


# ---- per-process cache for what units load (models, structures) ----------------------------------
_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = 4


def file_key(path: str | os.PathLike) -> tuple[str, int, int, int]:
    """(absolute path, inode, mtime in ns, size): changes when the file does (rewritten or replaced)."""
    p = Path(path).resolve()
    st = p.stat()
    return str(p), st.st_ino, st.st_mtime_ns, st.st_size


def cached(loader: Callable[..., Any], *args: Any, key: Any = None) -> Any:
    """``loader(*args)``, computed once per process for each key (the last few kept).

    The key is ``args`` unless ``key`` is given (for unhashable arguments such as configs).
    For files pass :func:`file_key` among the arguments, so a changed file is reloaded.
    """
    k = ((loader.__module__, loader.__qualname__, *args) if key is None else ("key", key), DEVICE)  # per device
    if k in _CACHE:
        _CACHE.move_to_end(k)
        return _CACHE[k]
    value = loader(*args)
    _CACHE[k] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


# ---- atomic unit results ---------------------------------------------------------------------------
@contextlib.contextmanager
def unit_output(out: Path) -> Iterator[Path]:
    """A temporary path beside ``out`` (same suffix), renamed onto it when the block succeeds.

    A rerun of the unit (after a killed worker) simply replaces the file: units are pure.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".tmp{out.suffix}", dir=out.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, out)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def save_array(out: Path, array: np.ndarray) -> None:
    """Write one ``.npy`` unit result atomically."""
    with unit_output(out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of ``size`` covering ``range(n)``."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [(s, min(s + size, n)) for s in range(0, n, size)]


# ---- the progress folder beside an output ------------------------------------------------------------
def partial_folder(output: str | os.PathLike) -> Path:
    """Hidden folder beside ``output`` holding unit results until the output is assembled."""
    output = Path(output)
    return output.parent / f".{output.name}.cryoshot-partial"


def _note(message: str) -> None:
    print(f"cryoshot: {message}", file=sys.stderr)


def prepare_partial(
    partial: Path, settings: dict, continue_: bool, log: Callable[[str], None] = _note, mark: str = PARTIAL_MARK
) -> bool:
    """Create the progress folder (or, continuing, check it holds a run with the same ``settings``).

    Returns True when it was created now. Without ``continue_`` an earlier unfinished run's
    progress is removed (and said so); with it, different settings are refused, naming them.
    """
    mark_path = partial / mark
    if partial.exists() and not mark_path.exists():
        raise CryoshotError(f"{partial} exists but was not made by cryoshot; move it away")
    settings = json.loads(json.dumps(settings, default=str))
    if partial.exists() and not continue_:
        shutil.rmtree(partial)
        log(f"removed the progress of an earlier, unfinished run ({partial.name}); pass --continue to resume one")
    if partial.exists():
        old = json.loads(mark_path.read_text())
        if old != settings:
            diffs = [k for k in sorted(set(settings) | set(old)) if old.get(k) != settings.get(k)]
            raise CryoshotError(f"--continue with different {', '.join(diffs)} than the unfinished run in {partial}; "
                                "rerun with the original settings, or start over without --continue")  # fmt: skip
        return False
    partial.mkdir()
    mark_path.write_text(json.dumps(settings))
    return True


@contextlib.contextmanager
def progress_folder(
    output: str | os.PathLike, settings: dict, continue_: bool, log: Callable[[str], None] = _note
) -> Iterator[Path]:
    """The progress folder of ``output``, locked, for the ``with`` block that runs and assembles the units.

    It is removed when the block succeeds, and when it fails before any unit result could be
    kept (an input error in a fresh run); after :class:`UnitsFailed`, or a kill, it stays for
    ``--continue``.
    """
    partial = partial_folder(output)
    with output_lock(partial):
        fresh = prepare_partial(partial, settings, continue_, log)
        try:
            yield partial
        except Exception as exc:
            if fresh and not isinstance(exc, UnitsFailed):
                shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(partial, ignore_errors=True)
