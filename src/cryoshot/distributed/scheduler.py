"""``--scheduler``: which Dask cluster runs a verb's work units.

- absent (None): this process, no Dask (:class:`cryoshot.utils.workunits.SerialRunner`);
- ``local`` or ``local:N``: a ``dask.distributed.LocalCluster`` of N worker processes here
  (N defaults to the CPUs available), one Dask thread each, torch threads = CPUs / N;
- ``slurm``: a ``dask_jobqueue.SLURMCluster`` from the user's dask-jobqueue configuration
  (``~/.config/dask/jobqueue.yaml``), overridden by :class:`SlurmOptions`; workers retire
  after ``lifetime`` (staggered) and are replaced, so runs outlast a job's walltime;
- ``tcp://HOST:PORT`` (or ``tls://``): an existing Dask scheduler.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryoshot.errors import CryoshotError
from cryoshot.utils.threads import available_cpus
from cryoshot.utils.workunits import SerialRunner

DEVICES = ("cpu", "cuda")
_INSTALL = "install the distributed extra: pip install 'cryoshot[distributed]' (dask[distributed], dask-jobqueue)"


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed ``--scheduler`` value: kind ``local``, ``slurm`` or ``address``."""

    kind: str
    workers: int | None = None
    address: str | None = None

    def describe(self) -> str:
        if self.kind == "local":
            return f"local:{self.workers}"
        return self.address if self.kind == "address" else self.kind


def parse_scheduler(text: str | None) -> SchedulerSpec | None:
    """``None`` | ``local`` | ``local:N`` | ``slurm`` | ``tcp://HOST:PORT`` -> spec (None: no Dask)."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return None
    t = str(text).strip()
    m = re.fullmatch(r"local(?::(\d+))?", t, flags=re.IGNORECASE)
    if m:
        n = int(m.group(1)) if m.group(1) else available_cpus()
        if not 1 <= n <= 1024:
            raise CryoshotError(f"--scheduler local:N needs 1 <= N <= 1024 worker processes, got {n}")
        return SchedulerSpec("local", workers=n)
    if t.lower() == "slurm":
        return SchedulerSpec("slurm")
    if re.fullmatch(r"(tcp|tls|ucx|inproc)://[^\s/]+(:\d+)?/?", t):
        return SchedulerSpec("address", address=t)
    raise CryoshotError(f"--scheduler must be local, local:N, slurm or tcp://HOST:PORT (an existing Dask scheduler), "
                        f"got '{text}'")  # fmt: skip


@dataclass(frozen=True)
class SlurmOptions:
    """What each SLURM job asks for; None takes the value from the user's jobqueue.yaml.

    ``memory`` as SLURM and Dask write it (``16GB``); ``walltime`` ``HH:MM:SS``; ``lifetime``
    (``55m``) should end a few minutes before the walltime, so a worker hands its work back
    before SLURM kills it; ``lifetime_stagger`` spreads the retirements.
    """

    jobs: int = 1
    cores: int | None = None
    memory: str | None = None
    walltime: str | None = None
    partition: str | None = None
    lifetime: str | None = "55m"
    lifetime_stagger: str = "4m"

    def validate(self) -> None:
        if self.jobs < 1:
            raise CryoshotError(f"--jobs must be at least 1, got {self.jobs}")
        if self.cores is not None and self.cores < 1:
            raise CryoshotError(f"--cores must be at least 1, got {self.cores}")
        if self.walltime is not None and not re.fullmatch(r"(\d+-)?\d{1,3}(:\d{2}){0,2}", self.walltime):
            raise CryoshotError(f"--walltime must look like HH:MM:SS (or D-HH:MM:SS), got '{self.walltime}'")
        if self.memory is not None and not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", self.memory, flags=re.I):
            raise CryoshotError(f"--memory must be an amount such as 16GB or 64GiB, got '{self.memory}'")


def slurm_cluster(options: SlurmOptions, device: str = "cpu"):
    """A ``SLURMCluster`` (not yet scaled): the user's jobqueue.yaml, then ``options``.

    On CPUs each job runs one single-threaded worker process per core (torch then uses one
    thread each: no oversubscription); with ``device='cuda'`` one worker per job drives the
    job's GPU with all its cores.
    """
    options.validate()
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise CryoshotError(f"--scheduler slurm needs dask-jobqueue; {_INSTALL}") from None
    kw: dict = {}
    if options.cores is not None:
        kw["cores"] = options.cores
    if options.memory is not None:
        kw["memory"] = options.memory
    if options.walltime is not None:
        kw["walltime"] = options.walltime
    if options.partition is not None:
        kw["queue"] = options.partition
    if options.lifetime:
        # the job ends when its worker retires; adapt() (in open_runner) submits a fresh job in its place
        kw["worker_extra_args"] = ["--lifetime", options.lifetime, "--lifetime-stagger", options.lifetime_stagger]
    if device == "cuda":
        kw["processes"] = 1
        kw["job_extra_directives"] = ["--gres=gpu:1"]
    elif options.cores is not None:
        kw["processes"] = options.cores
    try:
        return SLURMCluster(**kw)
    except ValueError as exc:  # e.g. no cores/memory in the configuration either
        raise CryoshotError(f"cannot configure the SLURM cluster: {exc}; give --cores and --memory, or set them in "
                            "~/.config/dask/jobqueue.yaml (jobqueue: slurm: cores, memory)") from None  # fmt: skip


@contextlib.contextmanager
def open_runner(
    spec: SchedulerSpec | str | None,
    *,
    slurm: SlurmOptions | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> Iterator:
    """A runner for ``spec``: None -> None (the verb runs in this process; a SerialRunner on
    ``device`` when that is not the CPU); else a connected DaskRunner.

    The cluster this opens (local or SLURM) is closed on exit; an existing scheduler is left running.
    """
    if isinstance(spec, str) or spec is None:
        spec = parse_scheduler(spec)
    if device not in DEVICES:
        raise CryoshotError(f"--device must be cpu or cuda, got '{device}'")
    if device == "cuda" and (spec is None or spec.kind == "local"):  # the GPU would be on this machine
        import torch

        if not torch.cuda.is_available():
            raise CryoshotError("--device cuda, but no CUDA GPU is visible here (or this torch is a CPU build); "
                                "leave --device out to run on the CPU")  # fmt: skip
    if spec is None:  # this process; a GPU when asked for
        yield None if device == "cpu" else SerialRunner(device)
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise CryoshotError(f"--scheduler needs Dask; {_INSTALL}") from None
    from cryoshot.distributed.runner import DaskRunner

    cluster, threads = None, None
    with contextlib.ExitStack() as stack:
        if spec.kind == "local":
            threads = max(1, available_cpus() // spec.workers)
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=spec.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                )  # fmt: skip
            )
            client = stack.enter_context(Client(cluster))
        elif spec.kind == "slurm":
            slurm = slurm or SlurmOptions()
            cluster = stack.enter_context(slurm_cluster(slurm, device))
            cluster.adapt(minimum_jobs=slurm.jobs, maximum_jobs=slurm.jobs)  # replaces retired workers
            client = stack.enter_context(Client(cluster))
            threads = 1 if device == "cpu" else None
        else:
            try:
                client = stack.enter_context(Client(spec.address, timeout="20s"))
            except OSError as exc:
                raise CryoshotError(f"cannot reach the Dask scheduler at {spec.address}: {exc}; start one "
                                    "(dask scheduler; dask worker ADDRESS) or check the address") from None  # fmt: skip
        link = _dashboard(client)
        log(f"dask: {spec.describe()} scheduler at {client.scheduler.address}"
            + (f", dashboard {link}" if link else ""))  # fmt: skip
        yield DaskRunner(client, threads=threads, device=device)


def _dashboard(client) -> str | None:
    """The dashboard address, when the scheduler serves one (it needs bokeh)."""
    try:
        info = client.scheduler_info()
        if "dashboard" not in info.get("services", {}):
            return None
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - a missing dashboard must never stop the run
        return None
