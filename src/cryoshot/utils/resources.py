"""Memory, disk and time checks before large work.

Commands that allocate or write in proportion to their options (``simulate``,
``extract``, ``average``) estimate what they will need before doing anything and
call :func:`check_fits`: a request that cannot fit in the memory available now, or
in the free space at its output, is refused with a :class:`CryoshotError` naming
``--force-size``; a large one that fits is announced on stderr in one line.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from cryoshot.errors import CryoshotError

GiB = 1024**3
NOTICE_MEMORY_BYTES = 2 * GiB
NOTICE_DISK_BYTES = 10 * GiB
NOTICE_SECONDS = 60.0
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")

# Shared terms of the estimates (measured on Linux, rounded up).
PROCESS_OVERHEAD_BYTES = 128 * 2**20  # modules imported lazily during the work, allocator slack
TABLE_ROW_BYTES = 1200  # one particle-table row in memory while rows accumulate (Python objects, DataFrame)
STAR_ROW_BYTES = 200  # one STAR row on disk (a dozen numeric columns)
FILE_OVERHEAD_BYTES = 4096  # per file written: MRC header plus the file system's last partial block


@dataclass(frozen=True)
class Estimate:
    """What a piece of work will need.

    Attributes
    ----------
    memory_bytes : int
        Peak of the arrays it will allocate (beyond what the process already holds).
    disk_bytes : int
        Bytes it will write.
    seconds : float or None
        Rough wall time (order of magnitude), None when unknown.
    """

    memory_bytes: int
    disk_bytes: int = 0
    seconds: float | None = None


def format_bytes(n: float) -> str:
    """Human-readable size in binary units, e.g. ``1.5 GiB`` (``512 B`` below one KiB)."""
    n = float(n)
    for unit in _UNITS[:-1]:
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.3g} {_UNITS[-1]}"


def format_seconds(s: float) -> str:
    """Human-readable duration, e.g. ``45 s``, ``12 min``, ``3.5 h``, ``2.0 days``."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2, no limit) -> None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_memory_left() -> int | None:
    """Bytes the process's memory cgroup (a batch job's or container's limit) still allows, or None.

    The limit minus the usage, counting reclaimable file cache as free; None when there is
    no limit or no cgroup file can be read.
    """
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    root = Path("/sys/fs/cgroup")
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, rel = parts[1], parts[2].lstrip("/")
        if controllers == "" and (root / "cgroup.controllers").exists():  # v2
            files = ("memory.max", "memory.current", "memory.stat", "inactive_file")
            base = root
        elif "memory" in controllers.split(","):  # v1
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat", "total_inactive_file")
            base = root / "memory"
        else:
            continue
        for d in (base / rel, base):  # in a cgroup namespace the own group is the root
            limit, usage = _read_int(d / files[0]), _read_int(d / files[1])
            if limit is None or usage is None:
                continue
            if limit >= 1 << 60:  # v1 writes "no limit" as a huge number
                return None
            return max(limit - usage + _stat_value(d / files[2], files[3]), 0)
    return None


def available_memory_bytes() -> int | None:
    """Memory available to new allocations without swapping, in bytes, or None if unknown.

    Linux ``MemAvailable`` from ``/proc/meminfo`` (free memory plus reclaimable
    caches), else the free physical pages from ``os.sysconf``; lowered to what the
    process's memory cgroup still allows when it has a limit.
    """
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024  # kB
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            pass
    left = cgroup_memory_left()
    if left is not None:
        avail = left if avail is None else min(avail, left)
    return avail


def existing_parent(path: str | os.PathLike) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor (the filesystem it will land on)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_disk_bytes(where: str | os.PathLike) -> int | None:
    """Free bytes (for unprivileged users) on the filesystem that holds or will hold ``where``."""
    try:
        return int(shutil.disk_usage(existing_parent(where)).free)
    except OSError:
        return None


def check_fits(
    need_mem_bytes: float,
    need_disk_bytes: float,
    where: str | os.PathLike | None,
    force_size: bool = False,
    what: str = "this run",
    *,
    seconds: float | None = None,
    hint: str = "ask for less",
) -> None:
    """Refuse work that cannot fit in memory or on disk; announce large work on stderr.

    Parameters
    ----------
    need_mem_bytes
        Peak memory the work will allocate.
    need_disk_bytes
        Bytes it will write.
    where
        Output path (its filesystem is checked for free space), or None when nothing is written.
    force_size
        Run even when the estimate exceeds what is available (``--force-size``);
        the notice line is still printed.
    what
        The work, for messages, e.g. ``"simulating 1000 subtomograms of 128^3"``.
    seconds
        Rough expected wall time, or None.
    hint
        How to need less, e.g. ``"use fewer particles or a smaller --box"``.

    Raises
    ------
    CryoshotError
        The estimate exceeds the available memory or the free disk space, and
        ``force_size`` is false.
    """
    mem_avail = available_memory_bytes()
    place = existing_parent(where) if where is not None and need_disk_bytes > 0 else None
    disk_free = free_disk_bytes(place) if place is not None else None
    short = []
    if mem_avail is not None and need_mem_bytes > mem_avail:
        short.append(f"about {format_bytes(need_mem_bytes)} of memory, but {format_bytes(mem_avail)} is available")
    if disk_free is not None and need_disk_bytes > disk_free:
        short.append(f"about {format_bytes(need_disk_bytes)} of disk, but {format_bytes(disk_free)} is free at {place}")
    if short and not force_size:
        raise CryoshotError(f"{what} needs {'; and '.join(short)}. To fit, {hint}; or pass --force-size to try anyway")
    large = (
        need_mem_bytes > NOTICE_MEMORY_BYTES
        or need_disk_bytes > NOTICE_DISK_BYTES
        or (seconds is not None and seconds > NOTICE_SECONDS)
    )
    if large or short:
        parts = [f"{format_bytes(need_mem_bytes)} of memory"]
        if mem_avail is not None:
            parts[-1] += f" ({format_bytes(mem_avail)} available)"
        if need_disk_bytes > 0:
            parts.append(f"{format_bytes(need_disk_bytes)} of disk")
            if disk_free is not None:
                parts[-1] += f" ({format_bytes(disk_free)} free)"
        if seconds is not None:
            parts.append(f"roughly {format_seconds(seconds)}")
        forced = "; --force-size: running although it may not fit" if short else ""
        print(f"cryoshot: {what} will need about {', '.join(parts)}{forced}", file=sys.stderr)
