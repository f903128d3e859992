"""Every bad input raises ValueError or TypeError with a message that says what to fix."""

import numpy as np
import pytest

from featuremap.service.engine import Matcher, find_peaks, match

FRAME = np.zeros((20, 30), np.uint8)
TEMPLATE = np.ones((5, 5), np.uint8)


@pytest.mark.parametrize(
    "frame,error,message",
    [
        (np.zeros((2, 3, 4, 5), np.uint8), ValueError, "HxW .gray. or HxWxC"),
        (np.zeros(30, np.uint8), ValueError, "1 dimensions"),
        (np.zeros((20, 30), np.int16), TypeError, "use uint8, float32 or float64"),
        (np.zeros((20, 30), np.complex64), TypeError, "dtype complex64"),
        (np.zeros((20, 30, 2), np.uint8), ValueError, "2 channels.*use 1, 3 or 4"),
        (np.zeros((20, 30, 3), np.uint8), ValueError, "frame has 3 channel.*templates have 1"),
        (np.zeros((0, 30), np.uint8), ValueError, "empty"),
        (np.full((20, 30), np.nan, np.float32), ValueError, "NaN or inf"),
        (np.full((20, 30), np.inf, np.float64), ValueError, "NaN or inf"),
        ([[1, 2], [3, 4]], TypeError, "numpy array"),
        (np.zeros((4, 30), np.uint8), ValueError, "larger than the frame.*padding='same'"),
    ],
)
def test_bad_frames(frame, error, message):
    with pytest.raises(error, match=message):
        Matcher([TEMPLATE])(frame)


@pytest.mark.parametrize(
    "settings,error,message",
    [
        (dict(method="ncc"), ValueError, "unknown method 'ncc': choose one of sqdiff"),
        (dict(padding="mirror"), ValueError, "unknown padding 'mirror'"),
        (dict(border="wrap"), ValueError, "unknown border 'wrap'.*reflect"),
        (dict(algorithm="fft"), ValueError, "unknown algorithm 'fft'"),
        (dict(stride=0), ValueError, "stride must be >= 1"),
        (dict(stride=1.5), TypeError, "stride must be an integer"),
        (dict(border_value="x"), TypeError, "border_value must be a number"),
        (dict(border_value=float("nan")), ValueError, "border_value must be finite"),
        (dict(masks=[np.ones((4, 5), np.uint8)]), ValueError, r"mask 0 has shape \(4, 5\).*\(5, 5\)"),
        (dict(masks=[np.ones((5, 5), np.int32)]), TypeError, "mask 0 has dtype int32"),
        (dict(masks=[np.full((5, 5), np.nan)]), ValueError, "mask 0 contains NaN"),
        (dict(masks=[None, None]), ValueError, "one entry .* per template"),
    ],
)
def test_bad_settings(settings, error, message):
    with pytest.raises(error, match=message):
        Matcher([TEMPLATE], **settings)


def test_bad_templates():
    with pytest.raises(ValueError, match="templates is empty"):
        Matcher([])
    with pytest.raises(TypeError, match="wrap a single template in a list"):
        Matcher(TEMPLATE)
    with pytest.raises(ValueError, match="different channel counts"):
        Matcher([TEMPLATE, np.ones((5, 5, 3), np.uint8)])
    with pytest.raises(TypeError, match="template 1 has dtype int64"):
        Matcher([TEMPLATE, np.ones((5, 5), np.int64)])
    with pytest.raises(ValueError, match="template 0 contains NaN"):
        Matcher([np.full((3, 3), np.nan, np.float32)])


def test_a_rejected_frame_leaves_the_matcher_usable():
    matcher = Matcher([TEMPLATE], method="ccorr")
    before = matcher(FRAME)
    with pytest.raises(ValueError):
        matcher(np.full((20, 30), np.nan, np.float32))
    assert np.array_equal(matcher(FRAME)[0], before[0])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(method="nope"), "unknown method"),
        (dict(method="ccorr", top_k=0), "top_k must be an integer >= 1"),
        (dict(method="ccorr", min_distance=0), "min_distance must be an integer >= 1"),
    ],
)
def test_bad_peak_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        find_peaks(np.zeros((4, 4), np.float32), **kwargs)
    with pytest.raises(ValueError, match="non-empty 2-D"):
        find_peaks(np.zeros(4, np.float32), method="ccorr")


def test_match_is_the_one_shot_matcher():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    assert np.array_equal(match(frame, [TEMPLATE])[0], Matcher([TEMPLATE])(frame)[0])
