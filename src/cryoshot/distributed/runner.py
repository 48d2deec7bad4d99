"""Run work units on Dask workers, with the same contract as the in-process runner.

Each pending unit becomes one task; only the unit's small arguments travel, and the worker
reads its inputs by path and writes its result file itself. A task whose worker dies is
rescheduled by Dask (units are pure, so a rerun gives the same file); a unit that raises is
reported with its item after every other unit has finished.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from cryoshot.utils.files import private_folder
from cryoshot.utils.workunits import UnitFailure, UnitsFailed, WorkUnit, error_text

_THREADS_SET: list[int] = []  # per worker process: torch threads already set
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def _undo_malloc_trim() -> None:
    """Give large allocations back to the heap in this worker process (glibc only; else nothing).

    Dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also switches off glibc's
    adaptive mmap threshold: every large array is then a fresh mmap, and picking ran 1.5x
    slower per micrograph in a worker than in a plain process (9.5 s against 6.2 s, one
    thread). These values restore the usual behaviour for the arrays units allocate.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 2**20)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**30)
    except (OSError, AttributeError):  # not glibc
        pass


def _execute(fn: Callable[..., None], args: tuple, out: str, threads: int | None, device: str) -> str:
    """Run one unit on a worker (torch threads set once per process); returns the result path."""
    import torch

    from cryoshot.utils import workunits

    if threads is None:
        from distributed import get_worker

        from cryoshot.utils.threads import available_cpus

        threads = max(1, available_cpus() // max(1, get_worker().state.nthreads))
    if _THREADS_SET != [threads]:
        if not _THREADS_SET:
            _undo_malloc_trim()
        torch.set_num_threads(threads)
        _THREADS_SET[:] = [threads]
    workunits.DEVICE = device
    with private_folder(Path(out).parent):  # the run's own folder: no per-file locks (a killed unit is redone)
        fn(*args, out=Path(out))
    return out


class DaskRunner:
    """Executes units on the workers of a connected ``distributed.Client``.

    Parameters
    ----------
    client : a connected ``distributed.Client``
    threads : torch threads per unit (None: the worker's CPUs over its Dask threads)
    device : ``cpu`` or ``cuda``: where units put their models (``cryoshot.utils.workunits.DEVICE``)
    """

    def __init__(self, client, threads: int | None = None, device: str = "cpu") -> None:
        self.client = client
        self.threads = threads
        self.device = device
        self.on_unit_done: Callable[[WorkUnit], None] | None = None  # a hook (used by the tests)

    def run(self, units: Sequence[WorkUnit], *, desc: str = "units", progress: bool = True) -> None:
        from distributed import as_completed

        pending = [u for u in units if not u.done()]
        if not pending:
            return
        tag = uuid.uuid4().hex[:8]
        futures = {
            self.client.submit(
                _execute, u.fn, u.args, str(u.out), self.threads, self.device, key=f"cryoshot-{u.key}-{tag}", pure=False
            ): u  # fmt: skip
            for u in pending
        }
        failures = []
        with tqdm(total=len(pending), desc=desc, unit="unit", disable=not progress, leave=False) as bar:
            for fut in as_completed(list(futures)):
                u = futures[fut]
                if fut.status == "error":
                    failures.append(UnitFailure(u.key, u.item, error_text(fut.exception())))
                elif fut.status == "cancelled":
                    failures.append(UnitFailure(u.key, u.item, "cancelled (the scheduler or its workers went away)"))
                elif self.on_unit_done is not None:
                    self.on_unit_done(u)
                bar.update(1)
                fut.release()
        missing = [u for u in pending if not u.done() and u.key not in {f.key for f in failures}]
        failures += [UnitFailure(u.key, u.item, "finished without writing its result") for u in missing]
        if failures:
            raise UnitsFailed(failures, len(units))


def probe_unit(*, out: Path) -> None:
    """A unit that only writes its result file: the scheduler's overhead per unit (benchmarks/bench_distributed.py)."""
    from cryoshot.utils.workunits import unit_output

    with unit_output(out) as tmp:
        tmp.write_text("done\n")
