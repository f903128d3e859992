"""The direct path's register tiles: the vector type they are built on, and every tile edge.

The reference suite's frames are narrower than a tile (widened with zeros
to one); here the widths straddle one and two tiles, the banks take every
block size (full blocks and a rest of every size), and the frames carry
NaN and inf where IEEE arithmetic must show through.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from featuremap.service.engine import Matcher
from featuremap.service.engine.direct import BLOCK, TILE, block_activity, correlate_direct, kernel_block, kernel_blocks
from featuremap.service.engine.lanes import LANES, add, fma, load, splat, store, zeros

from bounds import assert_within, gamma, map_bound
from naive import naive_match


@njit
def _lanes_roundtrip(a, b, at, out):
    # out[at : at+LANES] = 2.5 * a[at : at+LANES] + b[1 : 1+LANES] + 0, lane by lane
    va, vb = load(a, at), load(b, 1)
    store(out, at, add(fma(splat(2.5), va, vb), zeros()))


@pytest.mark.parametrize("at", [0, 1, 3, 7, 9])
def test_vector_lanes_load_compute_and_store_at_any_offset(at):
    size = 2 * LANES + 10
    rng = np.random.default_rng(at)
    a = rng.standard_normal(size).astype(np.float32)
    b = rng.standard_normal(LANES + 4).astype(np.float32)
    a[at + 2], a[at + 5], b[4] = np.nan, np.inf, -np.inf
    out = np.full(size, 7.0, np.float32)
    _lanes_roundtrip(a, b, at, out)
    # float64 reference; fused (one rounding) or not (two), within gamma(2) (|2.5 a| + |b|).
    x, y = 2.5 * a[at:at + LANES].astype(np.float64), b[1:1 + LANES].astype(np.float64)
    expected = x + y
    finite = np.isfinite(expected)
    got = out[at:at + LANES].astype(np.float64)
    assert (np.abs(got[finite] - expected[finite]) <= gamma(2) * (np.abs(x) + np.abs(y))[finite]).all()
    assert np.isnan(out[at + 2]) and out[at + 5] == np.inf and out[at + 3] == -np.inf
    untouched = np.r_[0:at, at + LANES:size]
    assert (out[untouched] == 7.0).all()  # exactly LANES values written


# CPU names that imply AVX-512 (LLVM's), for a run that names its CPU with an empty feature list.
AVX512_NAMES = {"x86-64-v4", "skylake-avx512", "cascadelake", "cooperlake", "icelake-client", "icelake-server",
                "tigerlake", "rocketlake", "sapphirerapids", "graniterapids", "znver4", "znver5"}


def test_a_vector_is_one_register_of_the_target_cpu():
    import numba

    from featuremap.service.edge.cpu_level import cpu_flags

    features, name = numba.config.CPU_FEATURES, numba.config.CPU_NAME
    if features:
        avx512 = "+avx512f" in features.split(",")
    elif features == "":
        avx512 = name in AVX512_NAMES
    else:  # this host's features
        avx512 = "avx512f" in cpu_flags()
    assert LANES == (16 if avx512 else 8)


@pytest.mark.parametrize("n", range(1, 14))
def test_kernel_blocks_cover_a_bank_once_in_full_blocks_then_the_rest(n):
    blocks = [kernel_block(b, n) for b in range(kernel_blocks(n))]
    covered = [k for start, size in blocks for k in range(start, start + size)]
    assert covered == list(range(n))
    sizes = [size for _, size in blocks]
    assert sizes[:-1] == [BLOCK] * (len(sizes) - 1) and 1 <= sizes[-1] <= BLOCK
    assert BLOCK == (4 if LANES == 16 else 3)  # what the registers hold


@pytest.mark.parametrize("width", [TILE - 1, TILE, TILE + 1, 2 * TILE - 1, 2 * TILE + 5])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7])
def test_tiles_match_the_float64_reference_at_every_width_and_bank_size(width, count):
    rng = np.random.default_rng(width * 31 + count)
    h, w = 3, 5
    frame = rng.random((h + 3, width + w - 1), dtype=np.float32) * 2 - 1
    templates = [rng.random((h, w), dtype=np.float32) * 2 - 1 for _ in range(count)]
    maps = Matcher(templates, method="ccorr", algorithm="direct")(frame)
    for template, result in zip(templates, maps):
        reference = naive_match(frame, template, method="ccorr")
        assert result.shape == reference.shape == (4, width)
        assert_within(result, reference, map_bound(frame, template, method="ccorr", algorithm="direct"), "ccorr")


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_tiles_on_colour_frames_with_a_stride(stride):
    rng = np.random.default_rng(stride)
    frame = rng.integers(0, 256, (12, 3 * TILE + 11, 3), dtype=np.uint8)
    templates = [rng.integers(0, 256, (4, 6, 3), dtype=np.uint8) for _ in range(6)]
    maps = Matcher(templates, method="ccorr", algorithm="direct", stride=stride)(frame)
    for template, result in zip(templates, maps):
        reference = naive_match(frame, template, method="ccorr", stride=stride)
        bound = map_bound(frame, template, method="ccorr", algorithm="direct", stride=stride)
        assert_within(result, reference, bound, "ccorr")


def test_nan_and_inf_in_a_frame_reach_exactly_the_windows_that_hold_them():
    # The Matcher refuses non-finite frames; its kernel must still keep IEEE semantics.
    rng = np.random.default_rng(5)
    planes = rng.random((1, 10, 2 * TILE + 3), dtype=np.float32)
    planes[0, 4, 40], planes[0, 8, 3] = np.nan, np.inf
    kernels = rng.random((5, 1, 3, 3), dtype=np.float32) + 0.1  # positive: inf stays +inf
    out = np.empty((5, 8, 2 * TILE + 1), np.float32)
    correlate_direct(planes, kernels, block_activity(kernels), 0, 0, 1, np.empty(0), np.empty((1, 1, 1)),
                     0, 3, 3, out)
    nan_windows = np.zeros(out.shape[1:], bool)
    nan_windows[2:5, 38:41] = True
    inf_windows = np.zeros(out.shape[1:], bool)
    inf_windows[6:8, 1:4] = True
    for result in out:
        assert np.isnan(result[nan_windows]).all()
        assert np.isposinf(result[inf_windows]).all()
        assert np.isfinite(result[~nan_windows & ~inf_windows]).all()


# What an AVX2 machine compiles for (Haswell): no AVX-512, sixteen 256-bit registers.
AVX2 = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,+sse,+sse2,"
        "+sse3,+sse4.1,+sse4.2,+ssse3,+xsave")

_EIGHT_LANES = """
import numpy as np
from featuremap.service.engine import Matcher
from featuremap.service.engine.direct import BLOCK, TILE
from featuremap.service.engine.lanes import LANES
from bounds import assert_within, map_bound
from naive import naive_match

assert (LANES, TILE, BLOCK) == (8, 32, 3), (LANES, TILE, BLOCK)
rng = np.random.default_rng(8)
for width in (TILE - 1, TILE, TILE + 3, 2 * TILE + 5):
    for count in (1, 2, 3, 4, 5, 7):
        frame = rng.random((6, width + 4), dtype=np.float32)
        templates = [rng.random((3, 5), dtype=np.float32) for _ in range(count)]
        for template, result in zip(templates, Matcher(templates, method="ccorr", algorithm="direct")(frame)):
            bound = map_bound(frame, template, method="ccorr", algorithm="direct")
            assert_within(result, naive_match(frame, template, method="ccorr"), bound, "ccorr")
print("eight lanes ok")
"""


@pytest.mark.skipif(LANES == 8, reason="this machine compiles eight lanes already: the tests above cover them")
def test_the_eight_lane_tiles_an_avx2_machine_compiles():
    # Numba compiles for a Haswell here (its cache keeps that apart from this host's code).
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=AVX2,
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _EIGHT_LANES], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "eight lanes ok" in done.stdout
