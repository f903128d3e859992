"""The CUDA simulator's suite (tests/cuda_sim) as a process of its own, started early.

NUMBA_ENABLE_CUDASIM must be set before Numba is imported, so the simulator's
tests cannot share the main test process. They take about a minute of one
core, mostly Python threads waiting on each other; conftest.py starts them as
soon as the session knows it will want them (at a lower priority), so they
run beside the other tests, and tests/engine/test_cuda.py waits for their outcome.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).parent


def gpu_dev() -> bool:
    """Whether numba-cuda is installed (the gpu-dev extra): the simulator's suite needs it."""
    import importlib.util

    return importlib.util.find_spec("numba_cuda") is not None


class SimulatorRun:
    """One run of ``pytest tests/cuda_sim`` with NUMBA_ENABLE_CUDASIM=1."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._output = tempfile.TemporaryFile(mode="w+")

    def start(self) -> None:
        if self._process is not None:
            return
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        self._process = subprocess.Popen(
            # nice: the other tests' processes come first; this one takes what they leave.
            ["nice", "-n", "10", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
             str(TESTS / "cuda_sim")],
            env=env, cwd=TESTS.parent, stdout=self._output, stderr=subprocess.STDOUT, text=True,
        )

    def result(self, timeout: float) -> tuple[int, str]:
        """Wait for the run (starting it if nobody did); its exit status and output."""
        self.start()
        assert self._process is not None
        code = self._process.wait(timeout)
        self._output.seek(0)
        return code, self._output.read()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


SIMULATOR = SimulatorRun()
