"""The engine against cv2.matchTemplate on 'valid' for all six methods."""

import cv2
import numpy as np
import pytest

from featuremap.service.engine import OPENCV_METHODS as METHODS, Matcher, match

from bounds import assert_within, map_bound
from images import random_image, structured_image
from naive import naive_match

CV_METHODS = {name: code for code, name in enumerate(METHODS)}  # OpenCV numbers them in this order


def compare(result, theirs, frame, template, method, algorithm, mask=None):
    """Ours and OpenCV's against the float64 reference, each within the float32 bound of its computation.

    Ours as the engine computes it (centred operands); OpenCV's as it does (the data as it comes,
    by transforms or directly): the two agree on every convention where both are within bounds.
    """
    reference = naive_match(frame, template, method=method, mask=mask)
    ours = map_bound(frame, template, method=method, algorithm=algorithm, mask=mask)
    assert_within(result, reference, ours, method, f"featuremap ({algorithm})")
    peer = map_bound(frame, template, method=method, algorithm="auto", mask=mask, centred=False)
    assert_within(np.nan_to_num(theirs, nan=0.0), reference, peer, method, "OpenCV", clamped=False)


@pytest.mark.parametrize("algorithm", ["direct", "spectral", "auto"])
@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32], ids=["u8", "f32"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("method", METHODS)
def test_matches_opencv(method, channels, dtype, kind, algorithm):
    rng = np.random.default_rng(CV_METHODS[method] * 100 + channels * 10 + (dtype == np.uint8))
    make = random_image if kind == "random" else structured_image
    frame = make(rng, 72, 96, channels, dtype)
    # Templates of three sizes, cut from the frame and from elsewhere.
    templates = [frame[10:21, 30:47].copy(), make(rng, 8, 8, channels, dtype), frame[40:64, 5:29].copy()]
    results = Matcher(templates, method=method, algorithm=algorithm)(frame)
    for template, result in zip(templates, results, strict=True):
        compare(result, cv2.matchTemplate(frame, template, CV_METHODS[method]), frame, template, method, algorithm)


@pytest.mark.parametrize("method", METHODS)
def test_matches_opencv_with_binary_mask(method):
    rng = np.random.default_rng(3)
    frame = structured_image(rng, 50, 60, 1, np.uint8)
    template = frame[12:25, 20:37].copy()
    mask = (rng.random(template.shape) > 0.25).astype(np.uint8)
    theirs = cv2.matchTemplate(frame, template, CV_METHODS[method], mask=mask)
    for algorithm in ("direct", "spectral"):
        compare(match(frame, [template], method=method, masks=[mask], algorithm=algorithm)[0], theirs, frame,
                template, method, algorithm, mask)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "sqdiff_normed"])
def test_matches_opencv_with_weighted_mask(method):
    # OpenCV's masked sqdiff_normed skips the clamping its unmasked path does
    # (ratios above 1.125 stay as they are); featuremap clamps both the same
    # way, so that one method is checked against tests/naive.py instead.
    rng = np.random.default_rng(4)
    frame = structured_image(rng, 50, 60, 3, np.float32)
    template = frame[12:25, 20:37].copy()
    weights = rng.random(template.shape[:2]).astype(np.float32)
    theirs = cv2.matchTemplate(frame, template, CV_METHODS[method], mask=np.dstack([weights] * 3))
    compare(match(frame, [template], method=method, masks=[weights])[0], theirs, frame, template, method, "auto",
            weights)
