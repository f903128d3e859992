"""The GPU path's kernels against the CPU engine, under Numba's CUDA simulator.

Collected only with NUMBA_ENABLE_CUDASIM=1 (tests/engine/test_cuda.py runs this
folder in its own process so): tiny inputs, since every simulated GPU thread
is a Python thread. The simulator's blocks, grids and shared tiles are small
(cuda_kernels.SIMULATED), so these frames cross tile edges, take several
shared-memory passes per template and loop over capped grids.
"""

from __future__ import annotations

import numpy as np
import pytest

from featuremap.service.engine import LOWER_IS_BETTER, OptionError, Matcher, find_peaks
from featuremap.service.engine.cuda import kernels as cuda_kernels
from images import structured_image
from scenes import photographs

# 0 x inf in the degenerate-window rule: compiled kernels take it silently,
# the simulator runs the formulas as Python on numpy scalars, which warn.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

NORMALISED = ("sqdiff_normed", "ccorr_normed", "ccoeff_normed", "ssim")
METHODS = ("sqdiff", "sqdiff_normed", "ccorr", "ccorr_normed", "ccoeff", "ccoeff_normed", "ssim")


def assert_close(gpu: list[np.ndarray], cpu: list[np.ndarray], method: str) -> None:
    """The documented tolerance: 1e-4 for the normalised methods and ssim, 1e-5 of the range for the raw ones."""
    assert len(gpu) == len(cpu)
    for g, c in zip(gpu, cpu):
        assert g.shape == c.shape and g.dtype == np.float32
        assert np.isfinite(g).all()
        scale = 1.0 if method in NORMALISED else max(1.0, float(np.abs(c).max()))
        assert float(np.abs(g.astype(np.float64) - c).max()) <= (1e-4 if method in NORMALISED else 1e-5) * scale


def best(score_map: np.ndarray, method: str) -> tuple[int, int]:
    flat = np.argmin(score_map) if method in LOWER_IS_BETTER else np.argmax(score_map)
    return tuple(int(v) for v in np.unravel_index(flat, score_map.shape))


def scene(seed: int, channels: int = 1, dtype=np.uint8, shape=(11, 13)):
    rng = np.random.default_rng(seed)
    frame = structured_image(rng, *shape, channels, dtype)
    return frame, [frame[2:7, 3:9].copy(), frame[6:9, 8:12].copy()]


def test_ssim_matches_the_cpu_path_with_padding_and_stride():
    # OpenCV's six methods are in the pairwise cover below, one per row.
    for channels, settings in ((3, dict()), (1, dict(padding="same", border="reflect", stride=2))):
        frame, templates = scene(1, channels, np.float32)
        cpu_maps = Matcher(templates, method="ssim", **settings)(frame)
        gpu_maps = Matcher(templates, method="ssim", device="cuda", **settings)(frame)
        assert_close(gpu_maps, cpu_maps, "ssim")
        for g, c in zip(gpu_maps, cpu_maps):
            assert best(g, "ssim") == best(c, "ssim")


# An orthogonal array: every pair of levels of padding, border, stride and
# mask appears in some row (nine rows cover all 3 x 3 pairs of the four).
PAIRWISE = [(p, b, s, m) for p, b, s, m in [
    (0, 0, 0, 0), (0, 1, 1, 1), (0, 2, 2, 2), (1, 0, 1, 2), (1, 1, 2, 0), (1, 2, 0, 1), (2, 0, 2, 1), (2, 1, 0, 2),
    (2, 2, 1, 0)]]
PADDINGS, BORDERS, STRIDES, MASKS = ("valid", "same", "full"), ("constant", "reflect", "replicate"), (1, 2, 3), \
    ("none", "binary", "weights")


def mask_of(kind: str, shape: tuple[int, int], rng) -> np.ndarray | None:
    if kind == "none":
        return None
    if kind == "binary":
        mask = (rng.random(shape) < 0.7).astype(np.uint8)
        mask[0, 0] = 1
        return mask
    return rng.random(shape).astype(np.float32) + 0.25


@pytest.mark.parametrize("row", range(len(PAIRWISE)))
def test_a_pairwise_cover_of_padding_border_stride_and_mask(row):
    p, b, s, m = PAIRWISE[row]
    method = METHODS[row % 6]  # OpenCV's six, in turn (ssim takes no masks: its own test above)
    channels, dtype = ((1, np.uint8), (3, np.float64), (4, np.float32))[row % 3]
    rng = np.random.default_rng(row)
    frame, templates = scene(10 + row, channels, dtype)
    masks = [mask_of(MASKS[m], t.shape[:2], rng) for t in templates]
    settings = dict(method=method, padding=PADDINGS[p], border=BORDERS[b], border_value=37.0, stride=STRIDES[s],
                    masks=masks)
    cpu_maps = Matcher(templates, **settings)(frame)
    gpu_maps = Matcher(templates, device="cuda", **settings)(frame)
    assert_close(gpu_maps, cpu_maps, method)
    for g, c in zip(gpu_maps, cpu_maps):
        assert best(g, method) == best(c, method)
    if PADDINGS[p] == "valid" and STRIDES[s] == 1 and method not in ("ccorr", "ccoeff"):
        assert best(gpu_maps[0], method) == (2, 3)  # the first template's own place


def test_templates_too_wide_for_the_shared_tile_take_the_wide_kernel():
    frame, templates = scene(3, shape=(12, 40))
    templates = [frame[1:9, 2:32].copy()]
    assert cuda_kernels.tile_rows(8, 30, 3) == 0
    for method in ("ccoeff_normed", "sqdiff"):
        cpu_maps = Matcher(templates, method=method, stride=3)(frame)
        assert_close(Matcher(templates, method=method, stride=3, device="cuda")(frame), cpu_maps, method)


def test_dark_and_bright_regions_of_a_photograph():
    astronaut, _ = photographs()
    for (y, x), method in (((10, 10), "ccoeff_normed"), ((300, 250), "sqdiff_normed")):  # near-black; the suit
        frame = astronaut[y:y + 14, x:x + 16]
        templates = [frame[3:8, 4:10].copy()]
        cpu_maps = Matcher(templates, method=method)(frame)
        gpu_maps = Matcher(templates, method=method, device="cuda")(frame)
        assert_close(gpu_maps, cpu_maps, method)
        assert best(gpu_maps[0], method) == (3, 4)


def test_flat_frames_and_templates_score_as_on_the_cpu():
    flat = np.full((10, 12), 128, np.uint8)
    templates = [flat[:4, :4].copy(), structured_image(np.random.default_rng(2), 4, 4, 1, np.uint8)]
    for method in ("ccoeff_normed", "ccorr_normed", "sqdiff_normed", "ssim"):
        cpu_maps = Matcher(templates, method=method)(flat)
        gpu_maps = Matcher(templates, method=method, device="cuda")(flat)
        assert_close(gpu_maps, cpu_maps, method)


def test_frames_of_extreme_magnitude_are_matched_exactly():
    frame, templates = scene(4, dtype=np.float32)
    for factor in (1e30, 1e-30):
        big = frame * np.float32(factor)
        cpu_maps = Matcher([t * np.float32(factor) for t in templates], method="ccorr")(big)
        gpu_maps = Matcher([t * np.float32(factor) for t in templates], method="ccorr", device="cuda")(big)
        assert all(np.isfinite(g).all() for g in gpu_maps)
        assert_close(gpu_maps, cpu_maps, "ccorr")


@pytest.mark.parametrize("method, top_k", [("ccoeff_normed", 3), ("sqdiff", 9)])
def test_peaks_found_on_the_device_are_find_peaks_of_its_maps(method, top_k):
    # top_k 3: round by round over several blocks a map; 9 (> FEW_PEAKS): one block a map, every round.
    assert (top_k > cuda_kernels.FEW_PEAKS) == (method == "sqdiff")
    frames = [scene(seed)[0] for seed in (5, 6)]
    _, templates = scene(5)
    matcher = Matcher(templates, method=method, device="cuda")
    threshold = 0.2 if method == "ccoeff_normed" else None
    found = matcher.find(frames, top_k=top_k, threshold=threshold, min_distance=[2, 3], subpixel=True, maps=True)
    assert len(found) == 2
    for frame, result in zip(frames, found):
        assert_close(result.maps, Matcher(templates, method=method)(frame), method)
        for score_map, peaks, distance in zip(result.maps, result.peaks, (2, 3)):
            assert peaks == find_peaks(score_map, method=method, top_k=top_k, threshold=threshold,
                                       min_distance=distance, subpixel=True)
            assert len(peaks) >= 2
    # A batch is the frames one by one.
    alone = matcher.find([frames[1]], top_k=top_k, threshold=threshold, min_distance=[2, 3], subpixel=True)[0]
    assert alone.peaks == found[1].peaks and alone.maps is None


def test_refused_input_leaves_the_matcher_working():
    frame, templates = scene(8)
    matcher = Matcher(templates, device="cuda")
    expected = matcher(frame)
    bad = [frame.astype(np.int16), np.dstack([frame] * 3), frame[:3, :3], np.full(frame.shape, np.nan, np.float32)]
    for item in bad:
        with pytest.raises(OptionError):
            matcher(item)
    with pytest.raises(OptionError, match="one shape and dtype"):
        matcher.find([frame, frame[:-1]])
    with pytest.raises(OptionError, match="one per template"):
        matcher.find([frame], min_distance=[1, 2, 3])
    assert_close(matcher(frame), expected, "ccoeff_normed")
