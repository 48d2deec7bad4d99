"""The options every per-item verb shares for where its work units run (``--scheduler`` and friends).

:func:`distributed_options` adds ``--scheduler``, ``--jobs``, ``--cores``, ``--memory``,
``--walltime``, ``--partition``, ``--lifetime``, ``--device`` and ``--continue`` to a verb
(one definition, not eight copies per verb) and hands the verb a :class:`DistOptions`;
``DistOptions.runner()`` opens the cluster they name.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, get_type_hints

import typer

from cryoshot.cli_types import choice
from cryoshot.distributed.scheduler import SlurmOptions, open_runner

PANEL = "Distributed execution (Dask)"


_SLURM_FIELDS = ("jobs", "cores", "memory", "walltime", "partition", "lifetime")  # options that fill SlurmOptions


@dataclass(frozen=True)
class DistOptions:
    scheduler: str | None = None
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    device: str = "cpu"
    continue_: bool = False

    @contextlib.contextmanager
    def runner(self, log: Callable[[str], None] = typer.echo) -> Iterator:
        """None (this process) without ``--scheduler``; else a DaskRunner on the cluster named."""
        with open_runner(self.scheduler, slurm=self.slurm, device=self.device, log=log) as r:
            yield r


_OPTIONS = {
    "scheduler": (
        Annotated[
            str | None,
            typer.Option(
                "--scheduler",
                rich_help_panel=PANEL,
                help="Run the work units on Dask: "
                "local[:N] (N worker processes here), slurm (dask-jobqueue), or tcp://HOST:PORT (a running "
                "scheduler). Default: this process.",
            ),
        ],
        None,
    ),  # fmt: skip
    "jobs": (
        Annotated[
            int,
            typer.Option(
                "--jobs", min=1, max=10_000, rich_help_panel=PANEL, help="slurm: number of SLURM jobs (worker nodes)."
            ),
        ],
        1,
    ),  # fmt: skip
    "cores": (
        Annotated[
            int | None,
            typer.Option(
                "--cores",
                min=1,
                max=10_000,
                rich_help_panel=PANEL,
                help="slurm: cores per job (default: jobqueue.yaml).",
            ),
        ],
        None,
    ),  # fmt: skip
    "memory": (
        Annotated[
            str | None,
            typer.Option(
                "--memory", rich_help_panel=PANEL, help="slurm: memory per job, e.g. 32GB (default: jobqueue.yaml)."
            ),
        ],
        None,
    ),  # fmt: skip
    "walltime": (
        Annotated[
            str | None,
            typer.Option(
                "--walltime", rich_help_panel=PANEL, help="slurm: walltime per job, HH:MM:SS (default: jobqueue.yaml)."
            ),
        ],
        None,
    ),  # fmt: skip
    "partition": (
        Annotated[
            str | None,
            typer.Option(
                "--partition", rich_help_panel=PANEL, help="slurm: partition (queue) (default: jobqueue.yaml)."
            ),
        ],
        None,
    ),  # fmt: skip
    "lifetime": (
        Annotated[
            str,
            typer.Option(
                "--lifetime",
                rich_help_panel=PANEL,
                help="slurm: a worker retires after this long (staggered by 4m) and is "
                "replaced; keep it below the walltime. 'none' to keep workers.",
            ),
        ],
        "55m",
    ),  # fmt: skip
    "device": (
        Annotated[
            str,
            typer.Option(
                "--device",
                parser=choice(("cpu", "cuda")),
                rich_help_panel=PANEL,
                help="cpu, or cuda: each worker runs its models on its GPU.",
            ),
        ],
        "cpu",
    ),  # fmt: skip
    "continue_": (
        Annotated[
            bool,
            typer.Option(
                "--continue",
                rich_help_panel=PANEL,
                help="Resume an unfinished run: compute only the missing work units.",
            ),
        ],
        False,
    ),  # fmt: skip
}


def distributed_options(fn: Callable) -> Callable:
    """Give a verb whose signature has ``dist: DistOptions`` the shared options in its place."""
    sig = inspect.signature(fn)
    hints = get_type_hints(fn, include_extras=True)
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values() if p.name != "dist"
    ]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
             for name, (ann, default) in _OPTIONS.items()]  # fmt: skip

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = {name: kwargs.pop(name) for name in _OPTIONS if name in kwargs}
        if str(values.get("lifetime", "")).lower() in ("none", ""):
            values["lifetime"] = None
        slurm = SlurmOptions(**{k: values.pop(k) for k in _SLURM_FIELDS if k in values})
        return fn(*args, dist=DistOptions(slurm=slurm, **values), **kwargs)

    del wrapper.__wrapped__  # typer must read the new signature, not fn's
    wrapper.__signature__ = sig.replace(parameters=[*params, *added])
    wrapper.__annotations__ = {**{p.name: p.annotation for p in params}, **{n: a for n, (a, _) in _OPTIONS.items()}}
    return wrapper
