"""Running a verb's work units on Dask: a local cluster, SLURM through dask-jobqueue, or an existing scheduler.

The verbs themselves live in the layers below and take a ``runner``; this layer only opens
the cluster and submits their units (see ``cryoshot.utils.workunits`` for the contract).
"""

from cryoshot.distributed.scheduler import SchedulerSpec, SlurmOptions, open_runner, parse_scheduler, slurm_cluster

__all__ = ["SchedulerSpec", "SlurmOptions", "open_runner", "parse_scheduler", "slurm_cluster"]
