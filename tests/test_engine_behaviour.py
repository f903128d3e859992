"""Localisation, degenerate inputs, path agreement and concurrency."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featuremap.service.engine import METHODS, Matcher, find_peaks, match, runtime, warmup

from images import binary_texture, random_image

NORMED_RANGE = {"ccoeff_normed": (-1.0, 1.0), "ccorr_normed": (0.0, 1.0), "ssim": (-1.0, 1.0)}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("method", METHODS)
def test_template_is_found_where_it_was_cut(method, padding, channels):
    rng = np.random.default_rng(11)
    frame = binary_texture(rng, 90, 120, channels)
    cuts = [(37, 21, 15, 15), (88, 60, 12, 20), (5, 70, 30, 16)]  # x, y, w, h
    templates = [frame[y:y + h, x:x + w].copy() for x, y, w, h in cuts]
    for algorithm in ("direct", "spectral"):
        maps = Matcher(templates, method=method, padding=padding, algorithm=algorithm)(frame)
        for (x, y, w, h), score_map in zip(cuts, maps):
            peak = find_peaks(score_map, method=method)[0]
            expected = (x, y) if padding == "valid" else (x + w // 2, y + h // 2)
            assert (peak.x, peak.y) == expected, f"{algorithm}: found {peak}"


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("algorithm", ["direct", "spectral"])
@pytest.mark.parametrize("method", METHODS)
def test_degenerate_inputs_give_finite_in_range_values(method, algorithm, masked):
    if masked and method == "ssim":
        pytest.skip("ssim takes no masks")
    rng = np.random.default_rng(2)
    textured = random_image(rng, 30, 40, 1, np.uint8)
    flat_frame = np.full((30, 40), 77, np.uint8)
    zero_frame = np.zeros((30, 40), np.uint8)
    half = textured.copy()
    half[:, :20] = 200  # flat windows beside textured ones
    flat_template = np.full((6, 7), 50, np.uint8)
    zero_template = np.zeros((6, 7), np.uint8)
    textured_template = textured[3:9, 4:11].copy()
    templates = [flat_template, zero_template, textured_template]
    masks = None
    if masked:
        empty = np.zeros((6, 7), np.uint8)
        masks = [np.ones((6, 7), np.uint8), empty, (rng.random((6, 7)) > 0.5).astype(np.uint8)]
    for frame in (textured, flat_frame, zero_frame, half):
        for padding in ("valid", "full"):
            maps = Matcher(templates, method=method, padding=padding, masks=masks, algorithm=algorithm)(frame)
            for score_map in maps:
                assert np.isfinite(score_map).all()
                if method in NORMED_RANGE:
                    low, high = NORMED_RANGE[method]
                    assert score_map.min() >= low and score_map.max() <= high
                if method.startswith("sqdiff"):
                    assert score_map.min() >= 0.0
    # The documented values: a flat template or window has no correlation.
    if method == "ccoeff_normed":
        maps = match(flat_frame, templates, method=method, algorithm=algorithm)
        assert all(np.all(m == 0.0) for m in maps)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 30),
    width=st.integers(1, 30),
    th=st.integers(1, 9),
    tw=st.integers(1, 9),
    channels=st.sampled_from([1, 3, 4]),
    method=st.sampled_from(METHODS),
    padding=st.sampled_from(["valid", "same", "full"]),
    border=st.sampled_from(["constant", "reflect", "replicate"]),
    stride=st.integers(1, 4),
    masked=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_direct_and_spectral_agree(height, width, th, tw, channels, method, padding, border, stride, masked, seed):
    rng = np.random.default_rng(seed)
    if padding == "valid":
        th, tw = min(th, height), min(tw, width)
    frame = random_image(rng, height, width, channels, np.uint8)
    templates = [random_image(rng, th, tw, channels, np.uint8)]
    masks = [(rng.random((th, tw)) > 0.3).astype(np.uint8)] if masked and method != "ssim" else None
    settings_ = dict(method=method, padding=padding, border=border, border_value=40, stride=stride, masks=masks)
    direct = match(frame, templates, algorithm="direct", **settings_)[0]
    spectral = match(frame, templates, algorithm="spectral", **settings_)[0]
    scale = max(1.0, float(np.abs(direct).max())) if method in ("sqdiff", "ccorr", "ccoeff") else 1.0
    # Rounding decides the clamp of windows at the edge of flatness; allow a
    # handful of such positions, never a systematic difference.
    bad = np.abs(direct - spectral) > 2e-3 * scale
    assert bad.sum() <= max(1, bad.size // 100), float(np.abs(direct - spectral).max())


def test_auto_picks_direct_for_small_and_spectral_for_large_templates():
    rng = np.random.default_rng(0)
    frame = random_image(rng, 480, 640, 1, np.uint8)
    small = [random_image(rng, 8, 8, 1, np.uint8)] * 2
    large = [random_image(rng, 64, 64, 1, np.uint8)] * 8
    assert set(Matcher(small).algorithms((480, 640)).values()) == {"direct"}
    assert set(Matcher(large).algorithms((480, 640)).values()) == {"spectral"}
    # auto is a choice of path, not of result.
    for bank, forced in ((small, "direct"), (large, "spectral")):
        auto_maps = Matcher(bank)(frame)
        forced_maps = Matcher(bank, algorithm=forced)(frame)
        assert all(np.array_equal(a, f) for a, f in zip(auto_maps, forced_maps))


def test_eight_threads_share_one_matcher():
    warmup()
    rng = np.random.default_rng(8)
    frames = [random_image(rng, 120, 160, 3, np.uint8) for _ in range(8)]
    templates = [frames[0][10:26, 20:36].copy(), frames[1][40:88, 50:98].copy(), frames[2][0:9, 0:13].copy()]
    matchers = {alg: Matcher(templates, method="ccoeff_normed", algorithm=alg) for alg in ("direct", "spectral")}
    expected = {alg: [m(f) for f in frames] for alg, m in matchers.items()}
    failures = []
    barrier = threading.Barrier(8)

    def worker(index):
        barrier.wait()
        for round_ in range(6):
            alg = ("direct", "spectral")[(index + round_) % 2]
            frame_index = (index + round_) % 8
            maps = matchers[alg](frames[frame_index])
            for got, want in zip(maps, expected[alg][frame_index]):
                if not np.array_equal(got, want):
                    failures.append((index, round_, alg))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert runtime.threading_layer() in ("omp", "tbb")


def test_warmup_compiles_everything_and_is_repeatable():
    warmup()
    warmup()
    assert runtime.threading_layer() != "workqueue"


def test_retain_freed_memory_is_accepted_by_glibc():
    import sys

    assert runtime.retain_freed_memory() is sys.platform.startswith("linux")


def test_plans_for_many_frame_sizes_stay_bounded():
    from featuremap.service.engine.matcher import PLANS_KEPT

    rng = np.random.default_rng(4)
    template = random_image(rng, 40, 40, 1, np.uint8)
    matcher = Matcher([template], algorithm="spectral")
    for size in range(60, 60 + 3 * PLANS_KEPT):
        frame = random_image(rng, size, size + 3, 1, np.uint8)
        assert matcher(frame)[0].shape == (size - 39, size - 36)
    assert len(matcher._plans) == PLANS_KEPT


@pytest.mark.parametrize("algorithm", ["direct", "spectral"])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("method", METHODS)
def test_inputs_are_never_written(method, padding, algorithm):
    # A gray float32 frame is the one the engine could use uncopied: read-only
    # and non-contiguous inputs must work, and no input may change.
    rng = np.random.default_rng(5)
    base = (rng.random((40, 100)) * 200 + 20).astype(np.float32)
    frames = {"contiguous": base[:, :50].copy(), "hxwx1": base[:, :50, None].copy(), "strided": base[:, ::2]}
    template = base[10:18, 12:22].copy()
    mask = None if method == "ssim" else [(rng.random(template.shape) > 0.3).astype(np.uint8)]
    for name, frame in frames.items():
        before, template_before = frame.copy(), template.copy()
        frame.setflags(write=False)
        template.setflags(write=False)
        for masks in (None, mask):
            score_map = Matcher([template], method=method, padding=padding, algorithm=algorithm,
                                masks=masks)(frame)[0]
            assert np.isfinite(score_map).all()
        assert np.array_equal(frame, before), f"{name} frame was written"
        assert np.array_equal(template, template_before)
        template.setflags(write=True)
