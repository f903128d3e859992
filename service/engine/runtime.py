"""Numba runtime settings shared by every kernel of the engine.

Imported before any kernel runs. The gRPC server calls one Matcher from many
threads at once; Numba's ``workqueue`` threading layer is not safe for
concurrent launches from several threads (it aborts the process), so the
engine asks for a thread-safe layer (TBB or OpenMP) unless the user chose a
safe one explicitly through ``NUMBA_THREADING_LAYER``.
"""

import os

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


def threading_layer() -> str:
    """Return the threading layer Numba is using (after the first parallel launch)."""
    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet chosen"
