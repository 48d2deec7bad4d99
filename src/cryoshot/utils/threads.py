"""Thread count for torch, from the CPUs this process may use."""

from __future__ import annotations

import os

import torch


def available_cpus() -> int:
    """CPUs available to this process (``CRYOSHOT_THREADS`` overrides)."""
    env = os.environ.get("CRYOSHOT_THREADS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def configure_threads() -> int:
    """Set torch's intra-op threads to the available CPUs and return the count."""
    n = available_cpus()
    torch.set_num_threads(n)
    return n
