"""CPUs and memory as the container grants them, read from the cgroup (nothing else imported:
the server's command reads them before Numba loads).

A pod limited to 4 CPUs on a 64-core node sees 64 in ``os.cpu_count()``;
sized by that, its pools and Numba's threads would be throttled hard. The
cgroup's quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``) and memory limit
(v2 ``memory.max``, v1 ``memory.limit_in_bytes``) say what it really has.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 60  # cgroup v1 writes a huge number for "no limit"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpus(root: Path = CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (1.5 = one and a half), None when unlimited."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota, period = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
    if quota and period and int(quota) > 0:
        return int(quota) / int(period)
    return None


def cgroup_memory(root: Path = CGROUP) -> int | None:
    """The memory limit of this process's cgroup in bytes, None when unlimited."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        text = _read(path)
        if text is not None:
            if text == "max" or not text.isdigit() or int(text) >= _UNLIMITED:
                return None
            return int(text)
    return None


def machine_memory() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_cpus(root: Path = CGROUP) -> int:
    """CPUs this process may use: the cgroup quota (rounded up), within the CPUs it may run on."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpus(root)
    return max(1, min(usable, math.ceil(quota))) if quota else max(1, usable)


def default_memory_budget(root: Path = CGROUP) -> int:
    """Half the container's memory limit (the machine's memory when there is none)."""
    return (cgroup_memory(root) or machine_memory()) // 2
