"""The direct path's register tiles: the vector type they are built on, and every tile edge.

The reference suite's frames are narrower than a tile (they take the plain
loop); here the widths straddle one and two tiles, the banks take every
block size (fours and a rest of three, two or one), and the frames carry
NaN and inf where IEEE arithmetic must show through.
"""

import numpy as np
import pytest
from numba import njit

from featuremap.service.engine import Matcher
from featuremap.service.engine.direct import TILE, block_activity, correlate_direct, kernel_block, kernel_blocks
from featuremap.service.engine.lanes import LANES, add, fma, load, splat, store, zeros

from naive import naive_match


@njit
def _lanes_roundtrip(a, b, at, out):
    # out[at .. at+7] = 2.5 * a[at .. at+7] + b[1 .. 8] + 0, lane by lane
    va, vb = load(a, at), load(b, 1)
    store(out, at, add(fma(splat(2.5), va, vb), zeros()))


@pytest.mark.parametrize("at", [0, 1, 3, 7, 9])
def test_vector_lanes_load_compute_and_store_at_any_offset(at):
    rng = np.random.default_rng(at)
    a = rng.standard_normal(24).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    a[at + 2], a[at + 5], b[4] = np.nan, np.inf, -np.inf
    out = np.full(24, 7.0, np.float32)
    _lanes_roundtrip(a, b, at, out)
    expected = np.float32(2.5) * a[at:at + LANES] + b[1:1 + LANES]
    np.testing.assert_allclose(out[at:at + LANES], expected, rtol=1e-6)  # NaN where expected, inf kept
    assert np.isnan(out[at + 2]) and out[at + 5] == np.inf and out[at + 3] == -np.inf
    untouched = np.r_[0:at, at + LANES:24]
    assert (out[untouched] == 7.0).all()  # exactly eight lanes written


@pytest.mark.parametrize("n", range(1, 14))
def test_kernel_blocks_cover_a_bank_once_in_fours_then_the_rest(n):
    blocks = [kernel_block(b, n) for b in range(kernel_blocks(n))]
    covered = [k for start, size in blocks for k in range(start, start + size)]
    assert covered == list(range(n))
    sizes = [size for _, size in blocks]
    assert sizes[:-1] == [4] * (len(sizes) - 1) and 1 <= sizes[-1] <= 4


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
        np.testing.assert_allclose(result, reference, atol=2e-5)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_tiles_on_colour_frames_with_a_stride(stride):
    rng = np.random.default_rng(stride)
    frame = rng.integers(0, 256, (12, 3 * TILE + 11, 3), dtype=np.uint8)
    templates = [rng.integers(0, 256, (4, 6, 3), dtype=np.uint8) for _ in range(6)]
    maps = Matcher(templates, method="ccorr", algorithm="direct", stride=stride)(frame)
    for template, result in zip(templates, maps):
        reference = naive_match(frame, template, method="ccorr", stride=stride)
        np.testing.assert_allclose(result, reference, rtol=1e-6, atol=1e-6 * np.abs(reference).max())


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
