"""Numba runtime settings shared by every kernel of the engine.

Imported before any kernel runs. The gRPC server calls one Matcher from many
threads at once; Numba's ``workqueue`` threading layer is not safe for
concurrent launches from several threads (it aborts the process), so the
engine asks for a thread-safe layer (TBB or OpenMP) unless the user chose a
safe one explicitly through ``NUMBA_THREADING_LAYER``.
"""

import ctypes
import ctypes.util
import os
import sys

import numba

_SAFE_LAYERS = {"tbb", "omp", "threadsafe", "safe"}

_requested = os.environ.get("NUMBA_THREADING_LAYER", "").strip().lower()
if _requested not in _SAFE_LAYERS:
    numba.config.THREADING_LAYER = "threadsafe"

#: Floating-point freedoms given to the kernels: fused multiply-add and
#: reassociation of sums. Deliberately not ``nnan``/``ninf``: the kernels must
#: keep IEEE semantics for NaN and inf, so ``fastmath=True`` is never used.
FASTMATH = {"contract", "reassoc"}

#: Options common to every compiled kernel. ``nogil`` lets the server decode
#: and encode other frames while a kernel runs; ``cache`` keeps compiled code
#: on disk so a restarted server reaches SERVING quickly.
JIT = dict(nogil=True, cache=True)


def max_threads() -> int:
    """Threads Numba's pool has (NUMBA_NUM_THREADS, read when Numba loaded)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def set_threads(count: int) -> int:
    """Use ``count`` threads (at most NUMBA_NUM_THREADS) for this thread's parallel kernels; returns it.

    Numba's setting is per calling thread: a pool calls it in each worker.
    """
    count = max(1, min(count, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(count)
    return count


def threading_layer() -> str:
    """Return the threading layer Numba is using (after the first parallel launch)."""
    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet chosen"


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def retain_freed_memory() -> bool:
    """Let the process reuse the memory of freed frame buffers instead of returning it.

    Each frame allocates a few megabytes of maps and scratch. By default glibc
    serves such blocks with fresh ``mmap`` pages and unmaps them on free, so
    every frame pays page faults on all of its memory again: on the 2-core
    benchmark VM that made the integral images 8x and a 720p frame 1.7x
    slower. Raising the mmap threshold to its maximum (32 MiB) and the trim
    threshold to 1 GiB keeps freed blocks in the heap for the next frame. The
    resident size then stays near its peak, which is what a server wants.

    Call it once at process start (the server, the demo and the benchmark
    do). A no-op returning False where the C library is not glibc.

    Returns
    -------
    bool
        Whether the allocator accepted the settings.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
