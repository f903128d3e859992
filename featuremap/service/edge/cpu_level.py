"""Which x86-64 level the kernels compile for: chosen before Numba loads, so a warmed cache fits.

Numba compiles for the CPU it runs on and keys its on-disk cache by that CPU's
name and features: kernels an image compiled at build time on one CPU model
are recompiled on every other (40-78 s of NOT_SERVING, measured between two
EPYC generations). The image therefore compiles its kernels once per
micro-architecture level (x86-64-v2, -v3, -v4: the levels of the x86-64 psABI,
which LLVM knows as CPU names), each into a folder of its own, and the server
picks, before Numba loads, the best level that this CPU supports and the image
carries. Nothing here imports Numba.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: The levels, best first, with the /proc/cpuinfo flags each needs beyond the one below it
#: (the x86-64 psABI's definitions; Linux spells LZCNT "abm" and LAHF-SAHF "lahf_lm").
LEVELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("x86-64-v4", frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})),
    ("x86-64-v3", frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"})),
    ("x86-64-v2", frozenset({"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"})),
)


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """This CPU's flags, from /proc/cpuinfo (empty where there is none, or off x86-64)."""
    if cpuinfo is None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return frozenset()
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def supported_levels(flags: frozenset[str]) -> list[str]:
    """The levels a CPU with ``flags`` runs, best first (each needs every level below it too)."""
    supported = []
    for index, (name, _) in enumerate(LEVELS):
        if all(needed <= flags for _, needed in LEVELS[index:]):
            supported.append(name)
    return supported


def choose(seed: str | os.PathLike | None, flags: frozenset[str] | None = None) -> str | None:
    """The best level this CPU supports for which ``seed`` holds compiled kernels (None: none fits)."""
    if not seed:
        return None
    root = Path(seed)
    for level in supported_levels(cpu_flags() if flags is None else flags):
        if (root / level).is_dir():
            return level
    return None


def apply(seed: str | os.PathLike | None) -> str | None:
    """Compile for the best level ``seed`` carries, by Numba's environment; returns the level's folder name.

    Must run before Numba is imported. A user's own NUMBA_CPU_NAME wins: nothing is chosen, and
    its folder is returned when ``seed`` carries one of that name. The empty feature list makes
    the level's name alone decide what Numba may use (with none given, Numba adds every feature
    of this CPU, and its cache key with them).
    """
    own = os.environ.get("NUMBA_CPU_NAME")
    if own:
        return own if seed and (Path(seed) / own).is_dir() else None
    level = choose(seed)
    if level is not None:
        os.environ["NUMBA_CPU_NAME"] = level
        os.environ["NUMBA_CPU_FEATURES"] = ""
    return level
