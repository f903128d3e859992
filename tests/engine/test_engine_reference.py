"""The engine against the float64 reference loops of tests/naive.py, over every
method x padding x border x stride x mask x channels x dtype, on both paths."""

import zlib

import numpy as np
import pytest

from featuremap.service.engine import OPENCV_METHODS as METHODS, Matcher

from bounds import assert_within, map_bound
from images import random_image
from naive import naive_match
PADDINGS = [("valid", "constant"), ("same", "constant"), ("same", "reflect"), ("same", "replicate"),
            ("full", "constant"), ("full", "reflect"), ("full", "replicate")]


def assert_close(result, reference, bound, method, context):
    """The engine's map against the float64 reference, within the float32 bound of its computation."""
    assert result.dtype == np.float32, context
    assert_within(result, reference, bound, method, context)


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
        for i, (result, reference) in enumerate(zip(matcher(frame), references, strict=True)):
            bound = map_bound(frame, templates[i], method=method, algorithm=algorithm, padding=padding,
                              border=border, border_value=value, stride=stride, bank=templates,
                              mask=None if masks is None else masks[i])
            assert_close(result, reference, bound, method, f"{algorithm} template {i}")


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
                bound = map_bound(frame, template, method=method, algorithm=algorithm, padding=padding,
                                  border=border)
                assert_close(result, reference, bound, method, f"{padding}/{border}/{algorithm}")


def test_float64_frames_are_accepted_and_converted():
    rng = np.random.default_rng(9)
    frame = rng.random((12, 14))
    template = frame[2:6, 3:8].copy()
    result = Matcher([template], method="ccorr")(frame)[0]
    assert result.dtype == np.float32
    # The frame's one rounding to float32 is among the operand roundings every bound allows.
    bound = map_bound(frame, template, method="ccorr", algorithm="auto")
    assert_close(result, naive_match(frame, template, method="ccorr"), bound, "ccorr", "float64")
