"""Where a Matcher computes: ``cpu`` (always) or ``cuda`` (numba-cuda and a GPU).

Nothing here imports numba-cuda unless ``cuda`` is asked for, so the CPU
build neither needs nor loads it.
"""

from __future__ import annotations

import importlib.util
import os

from ..options import OptionError, check_choice

DEVICES = ("cpu", "cuda")

#: The numba-cuda release the ``cuda`` extra pins (pyproject.toml says the same).
NUMBA_CUDA_VERSION = "0.30.4"


def cuda_problem() -> str | None:
    """Why ``device="cuda"`` cannot be used here, or None when it can.

    Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set before Numba
    is imported) the kernels run on the CPU, slowly: that is how the tests
    check them on machines without a GPU.
    """
    try:
        found = importlib.util.find_spec("numba_cuda")
    except ImportError:
        found = None
    if found is None:
        return ("device='cuda' needs numba-cuda, which is not installed: pip install 'featuremap[cuda]' "
                f"(numba-cuda {NUMBA_CUDA_VERSION}), or use device='cpu'")
    from numba import cuda

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return None
    try:
        if cuda.is_available() and len(cuda.gpus) > 0:
            return None
    except Exception as error:  # the driver's own errors differ from release to release
        return f"device='cuda' found no usable GPU ({error}): use device='cpu'"
    return "device='cuda' found no usable CUDA GPU or driver on this machine: use device='cpu'"


_checked: dict[str, str | None] = {}


def check_device(device: object) -> str:
    """Return ``device`` normalised; raise OptionError at once when ``cuda`` cannot be used here."""
    device = check_choice("device", device, DEVICES)
    if device == "cuda":
        if "cuda" not in _checked:
            _checked["cuda"] = cuda_problem()
        problem = _checked["cuda"]
        if problem is not None:
            raise OptionError(problem)
    return device


#: What gpu_memory_bytes() reports where the device says "unlimited" (the simulator).
UNKNOWN_GPU_MEMORY = 1 << 30


def gpu_memory_bytes() -> int:
    """The current GPU's total memory in bytes (call only where ``cuda`` can be used)."""
    from numba import cuda

    total = cuda.current_context().get_memory_info().total
    return int(total) if total != float("inf") else UNKNOWN_GPU_MEMORY
