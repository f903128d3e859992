"""The CUDA path without a GPU: its kernels under Numba's simulator, and its refusals.

NUMBA_ENABLE_CUDASIM must be set before Numba is imported, so the simulator
tests (tests/cuda_sim/) run in a process of their own (tests/simulated.py);
this module reports its failures.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from featuremap.service.engine import Matcher, OptionError, cuda_problem, match
from simulated import SIMULATOR, gpu_dev

#: The tests that need numba-cuda (the gpu-dev extra, `make test-gpu`); make test runs the rest.
needs_numba_cuda = pytest.mark.skipif(not gpu_dev(), reason="numba-cuda is not installed: make test-gpu runs these")


@needs_numba_cuda
def test_the_cuda_kernels_match_the_cpu_engine_under_the_simulator():
    # Started by conftest.py when the session was collected, so it ran beside the other tests.
    code, output = SIMULATOR.result(timeout=540)
    assert code == 0, output[-8000:]
    assert " passed" in output and "skipped" not in output


def _signatures():
    """Every kernel with the argument types CudaMatcher launches it with (frames: each dtype)."""
    from numba import types

    f32, f64, i64, b1 = types.float32, types.float64, types.int64, types.boolean

    def a(dtype, ndim):
        return types.Array(dtype, ndim, "C")

    frames = [a(dtype, 4) for dtype in (types.uint8, f32, f64)]
    signatures = []
    for frame in frames:
        signatures.append(("channel_sums", (frame, i64, i64, i64, i64, i64, f64, a(f64, 2))))
        signatures.append(("make_planes", (frame, i64, i64, i64, f64, a(f64, 2), f64, a(f32, 4), a(f64, 1))))
    signatures += [
        ("row_prefix", (a(f32, 4), a(f64, 4), a(f64, 4))),
        ("column_prefix", (a(f64, 4), a(f64, 4))),
        ("correlate", (a(f32, 4), a(f32, 4), i64, i64, i64, i64, a(f32, 4))),
        ("correlate_wide", (a(f32, 4), a(f32, 4), i64, i64, i64, a(f32, 4))),
        ("score_plain", (a(f32, 4), a(f64, 4), a(f64, 4), i64, i64, i64, i64, i64, i64, a(f64, 2), a(f64, 1), i64,
                         a(f64, 1), a(f64, 1), a(f64, 1), a(f32, 4))),
        ("score_masked", (a(f32, 4), a(f64, 4), a(f64, 4), a(i64, 1), a(i64, 1), a(i64, 1), a(i64, 1), a(f64, 1),
                          a(f64, 1), a(i64, 1), a(i64, 1), a(f64, 1), a(f64, 1), a(b1, 1), a(f64, 1), a(f64, 1),
                          a(f64, 1), a(f64, 2), i64, i64, i64, i64, a(f64, 2), a(f64, 1), i64, a(f32, 4))),
        ("score_ssim", (a(f32, 4), a(f64, 4), a(f64, 4), a(i64, 2), i64, i64, i64, i64, i64, a(f64, 2), a(f64, 2),
                        f64, f64, a(f32, 4))),
        ("top_peaks", (a(f32, 4), b1, f64, b1, a(i64, 1), a(f64, 4), a(types.int32, 2))),
        ("partial_peaks", (a(f32, 4), b1, a(i64, 1), a(f64, 4), a(types.int32, 2), i64, a(f32, 3), a(i64, 3))),
        ("pick_peaks", (a(f32, 4), f64, b1, a(f64, 4), a(types.int32, 2), i64, a(f32, 3), a(i64, 3))),
    ]
    return signatures


@needs_numba_cuda
def test_every_cuda_kernel_compiles_for_a_hopper_gpu():
    # The simulator runs the kernels as Python, which types nothing: this
    # compiles each one as the GPU would (PTX for sm_90, through NVVM; the dev
    # extra brings libnvvm), so a kernel that could not compile fails here.
    # Register blocking must hold: the correlation kernels keep their
    # accumulators in registers, never in local memory.
    from numba import cuda

    from featuremap.service.engine.cuda import kernels as cuda_kernels

    for name, signature in _signatures():
        ptx, _ = cuda.compile_ptx(getattr(cuda_kernels, name).py_func, signature, cc=(9, 0))
        assert ".entry" in ptx, name
        if name.startswith("correlate"):
            assert ".local" not in ptx, f"{name} keeps its accumulators in local memory"


def test_an_unknown_device_is_refused():
    with pytest.raises(OptionError, match="unknown device 'gpu'"):
        Matcher([np.zeros((4, 4), np.uint8)], device="gpu")


@needs_numba_cuda
@pytest.mark.skipif(cuda_problem() is None, reason="this machine has a usable GPU")
def test_cuda_without_a_gpu_fails_at_once_with_what_to_do():
    frame = np.zeros((8, 8), np.uint8)
    with pytest.raises(OptionError, match="device='cuda' found no usable") as caught:
        match(frame, [frame[:4, :4]], device="cuda")
    assert "device='cpu'" in str(caught.value)


def test_cuda_without_numba_cuda_names_the_extra_to_install():
    # A fresh interpreter in which the numba_cuda package cannot be found.
    script = (
        "import importlib.abc, sys\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numba_cuda' or name.startswith('numba_cuda.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "import numpy as np\n"
        "from featuremap.service.engine import Matcher, OptionError\n"
        "try:\n"
        "    Matcher([np.zeros((4, 4), np.uint8)], device='cuda')\n"
        "except OptionError as error:\n"
        "    print('refused:', error)\n"
        "Matcher([np.zeros((4, 4), np.uint8)])(np.zeros((8, 8), np.uint8))\n"
        "print('cpu ok', 'numba_cuda' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "refused: device='cuda' needs numba-cuda" in result.stdout
    assert "pip install 'featuremap[cuda]'" in result.stdout
    assert "cpu ok False" in result.stdout


@needs_numba_cuda
@pytest.mark.skipif(cuda_problem() is None, reason="this machine has a usable GPU")
def test_serve_device_cuda_without_a_gpu_stops_at_start_saying_why(tmp_path):
    result = subprocess.run([sys.executable, "-m", "featuremap.service", "serve", "--address", "127.0.0.1:0",
                             "--data-dir", str(tmp_path), "--device", "cuda"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "cannot start: device='cuda' found no usable" in result.stderr


def test_an_unknown_server_device_is_a_bad_setting(tmp_path):
    result = subprocess.run([sys.executable, "-m", "featuremap.service", "serve", "--data-dir", str(tmp_path),
                             "--device", "tpu"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "device must be cpu or cuda, got 'tpu'" in result.stderr
