"""Localisation, degenerate inputs, path agreement and concurrency."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featuremap.service.engine import METHODS, Matcher, find_peaks, match, plan, runtime, warmup
from featuremap.service.engine.spectral import transform_shape

from bounds import assert_within, map_bound, ssim_bound
from images import binary_texture, random_image
from naive import naive_match, naive_ssim

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
def test_direct_and_spectral_match_the_reference(height, width, th, tw, channels, method, padding, border, stride, masked, seed):
    rng = np.random.default_rng(seed)
    if padding == "valid":
        th, tw = min(th, height), min(tw, width)
    frame = random_image(rng, height, width, channels, np.uint8)
    templates = [random_image(rng, th, tw, channels, np.uint8)]
    masks = [(rng.random((th, tw)) > 0.3).astype(np.uint8)] if masked and method != "ssim" else None
    settings_ = dict(method=method, padding=padding, border=border, border_value=40, stride=stride, masks=masks)
    mask = None if masks is None else masks[0]
    geometry = dict(padding=padding, border=border, border_value=40, stride=stride)
    # Both paths against the float64 reference, each within the float32 bound of its computation
    # (windows at the edge of flatness have a bound past the clamp: any in-range value there).
    if method == "ssim":
        reference = naive_ssim(frame, templates[0], data_range=255.0, **geometry)
    else:
        reference = naive_match(frame, templates[0], method=method, mask=mask, **geometry)
    for algorithm in ("direct", "spectral"):
        result = match(frame, templates, algorithm=algorithm, **settings_)[0]
        if method == "ssim":
            bound = ssim_bound(frame, templates[0], data_range=255.0, algorithm=algorithm, **geometry)
            assert (np.abs(result - reference) <= bound).all(), algorithm
        else:
            bound = map_bound(frame, templates[0], method=method, algorithm=algorithm, mask=mask, **geometry)
            assert_within(result, reference, bound, method, algorithm)


@pytest.mark.parametrize("direct_scale,spectral_scale", [(1.0, 1.0), (0.05, 20.0), (20.0, 0.05)])
def test_auto_takes_the_path_its_recorded_cost_model_predicts_faster(direct_scale, spectral_scale):
    # The contract, not a choice: given a cost model (as calibrate() records it for a machine),
    # auto takes, group by group, the path the model predicts faster, and its maps are that
    # path's, bit for bit. Which path wins depends on the machine; this does not.
    rng = np.random.default_rng(0)
    frame = random_image(rng, 120, 160, 1, np.uint8)
    bank = [random_image(rng, 8, 8, 1, np.uint8)] * 2 + [random_image(rng, 40, 40, 1, np.uint8)] * 3
    previous = plan.cost_model()
    plan.use_cost_model(plan.CostModel(direct_scale, spectral_scale, spectral_scale))
    try:
        matcher = Matcher(bank)
        chosen = matcher.algorithms((120, 160))
        shared = False  # the frame's spectra, once a group pays for them, are free to the next
        for group in matcher.prepared.groups:  # largest templates first
            direct = plan.direct_seconds(group, matcher.output_shape(group.members[0], (120, 160)))
            spectral = plan.spectral_seconds(group, transform_shape(120, 160), 1, shared)
            assert chosen[(group.height, group.width)] == ("spectral" if spectral < direct else "direct")
            shared = shared or spectral < direct
        if direct_scale != spectral_scale:  # a 400x lopsided model: one path everywhere
            assert set(chosen.values()) == {"direct" if direct_scale < spectral_scale else "spectral"}
        auto_maps = matcher(frame)
        for (h, w), algorithm in chosen.items():
            forced = Matcher([t for t in bank if t.shape == (h, w)], algorithm=algorithm)(frame)
            ours = [m for t, m in zip(bank, auto_maps) if t.shape == (h, w)]
            assert all(np.array_equal(a, f) for a, f in zip(ours, forced, strict=True))
    finally:
        plan.use_cost_model(previous)


def test_eight_threads_share_one_matcher(workers):
    warmup()
    rng = np.random.default_rng(8)
    frames = [random_image(rng, 120, 160, 3, np.uint8) for _ in range(8)]
    templates = [frames[0][10:26, 20:36].copy(), frames[1][40:88, 50:98].copy(), frames[2][0:9, 0:13].copy()]
    matchers = {alg: Matcher(templates, method="ccoeff_normed", algorithm=alg) for alg in ("direct", "spectral")}
    expected = {alg: [m(f) for f in frames] for alg, m in matchers.items()}
    failures = []
    rounds = []
    barrier = threading.Barrier(8, timeout=120)

    def worker(index):
        barrier.wait()
        for round_ in range(6):
            alg = ("direct", "spectral")[(index + round_) % 2]
            frame_index = (index + round_) % 8
            maps = matchers[alg](frames[frame_index])
            for got, want in zip(maps, expected[alg][frame_index], strict=True):
                if not np.array_equal(got, want):
                    failures.append((index, round_, alg))
            rounds.append(index)

    workers.map(worker, 8)  # a worker's exception fails the test here
    assert failures == []
    assert sorted(rounds) == sorted(list(range(8)) * 6)  # every round of every thread ran
    assert runtime.threading_layer() in ("omp", "tbb")


def test_warmup_compiles_everything_and_is_repeatable():
    warmup()
    warmup()
    assert runtime.threading_layer() != "workqueue"


def test_retain_freed_memory_is_accepted_by_glibc():
    import sys

    assert runtime.retain_freed_memory() is sys.platform.startswith("linux")


def test_plans_for_many_frame_sizes_stay_bounded():
    from featuremap.service.engine.plans import PLANS_KEPT

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


def test_a_cancelled_call_stops_between_the_spectral_paths_kernels():
    # One group of 12 kernels on the spectral path: cancelled once the first kernel has been asked
    # about, the call stops (Cancelled) without transforming the rest.
    from featuremap.service.engine import Cancelled

    rng = np.random.default_rng(4)
    frame = random_image(rng, 120, 160, 1, np.float32)
    matcher = Matcher([random_image(rng, 24, 24, 1, np.float32) for _ in range(12)], algorithm="spectral")
    asked = []

    def cancelled():
        asked.append(1)
        return len(asked) > 2  # the group's own check passes, then the first kernel's

    with pytest.raises(Cancelled):
        matcher(frame, cancelled=cancelled)
    assert 3 <= len(asked) <= 3 + 12  # asked per kernel, not only per group
    assert len(matcher(frame)) == 12  # and the Matcher is whole for the next call
