"""The engine against the float64 reference loops of tests/naive.py, over every
method x padding x border x stride x mask x channels x dtype, on both paths."""

import zlib

import numpy as np
import pytest

from featuremap.service.engine import OPENCV_METHODS as METHODS, Matcher

from images import random_image
from naive import naive_match

RAW = {"sqdiff", "ccorr", "ccoeff"}
PADDINGS = [("valid", "constant"), ("same", "constant"), ("same", "reflect"), ("same", "replicate"),
            ("full", "constant"), ("full", "reflect"), ("full", "replicate")]


def assert_close(result, reference, method, context):
    assert result.shape == reference.shape, context
    assert result.dtype == np.float32, context
    assert np.isfinite(result).all(), context
    if method in RAW:
        tolerance = 1e-4 * max(1.0, float(np.abs(reference).max()))
    else:
        tolerance = 2e-3
    error = float(np.abs(result - reference).max())
    assert error <= tolerance, f"{context}: max error {error:.3g} > {tolerance:.3g}"


def make_masks(kind, rng, shape):
    if kind == "none":
        return None
    if kind == "binary":
        mask = (rng.random(shape) > 0.3).astype(np.uint8)
        mask[0, 0] = 1
        return [mask, None]
    return [rng.random(shape).astype(np.float32), None]


@pytest.mark.parametrize("dtype", [np.uint8, np.float32], ids=["u8", "f32"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mask", ["none", "binary", "weights"])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding,border", PADDINGS)
@pytest.mark.parametrize("method", METHODS)
def test_matches_naive_reference(method, padding, border, stride, mask, channels, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((method, padding, border, stride, mask, channels)).encode()))
    frame = random_image(rng, 11, 13, channels, dtype)
    templates = [random_image(rng, 4, 5, channels, dtype), random_image(rng, 3, 3, channels, dtype)]
    masks = make_masks(mask, rng, (4, 5))
    value = 17.0 if dtype == np.uint8 else 0.25
    references = [
        naive_match(frame, t, method=method, padding=padding, border=border, border_value=value,
                    stride=stride, mask=None if masks is None else masks[i])
        for i, t in enumerate(templates)
    ]
    for algorithm in ("direct", "spectral"):
        matcher = Matcher(templates, method=method, padding=padding, border=border, border_value=value,
                          stride=stride, masks=masks, algorithm=algorithm)
        for i, (result, reference) in enumerate(zip(matcher(frame), references)):
            assert_close(result, reference, method, f"{algorithm} template {i}")


@pytest.mark.parametrize("method", METHODS)
def test_template_larger_than_frame_under_same_and_full(method):
    rng = np.random.default_rng(5)
    frame = random_image(rng, 4, 5, 1, np.float32)
    template = random_image(rng, 7, 6, 1, np.float32)
    for padding in ("same", "full"):
        for border in ("constant", "reflect", "replicate"):
            reference = naive_match(frame, template, method=method, padding=padding, border=border)
            for algorithm in ("direct", "spectral"):
                result = Matcher([template], method=method, padding=padding, border=border,
                                 algorithm=algorithm)(frame)[0]
                assert_close(result, reference, method, f"{padding}/{border}/{algorithm}")


def test_float64_frames_are_accepted_and_converted():
    rng = np.random.default_rng(9)
    frame = rng.random((12, 14))
    template = frame[2:6, 3:8].copy()
    result = Matcher([template], method="ccorr")(frame)[0]
    assert result.dtype == np.float32
    assert_close(result, naive_match(frame, template, method="ccorr"), "ccorr", "float64")
