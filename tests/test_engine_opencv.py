"""The engine against cv2.matchTemplate on 'valid' for all six methods."""

import cv2
import numpy as np
import pytest

from featuremap.service.engine import OPENCV_METHODS as METHODS, Matcher, match

from images import random_image, structured_image

RAW = {"sqdiff", "ccorr", "ccoeff"}
CV_METHODS = {name: code for code, name in enumerate(METHODS)}  # OpenCV numbers them in this order


def compare(result, reference, method):
    assert result.shape == reference.shape
    if method in RAW:
        tolerance = 1e-4 * float(np.abs(reference).max())
    else:
        tolerance = 2e-3
    error = float(np.abs(result - reference).max())
    assert error <= tolerance, f"max error {error:.3g} > {tolerance:.3g}"


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
    # OpenCV's ccoeff pair loses float32 accuracy on an offset (it scores 0
    # where the exact value is -0.04 on these frames); the pair is offset
    # invariant, so OpenCV gets float frames centred, as the engine centres them.
    offset = frame.mean(dtype=np.float64).astype(np.float32)
    centre = method.startswith("ccoeff") and dtype == np.float32
    for template, result in zip(templates, results, strict=True):
        reference = cv2.matchTemplate(frame - offset, template - offset, CV_METHODS[method]) if centre else \
            cv2.matchTemplate(frame, template, CV_METHODS[method])
        compare(result, reference, method)


@pytest.mark.parametrize("method", METHODS)
def test_matches_opencv_with_binary_mask(method):
    rng = np.random.default_rng(3)
    frame = structured_image(rng, 50, 60, 1, np.uint8)
    template = frame[12:25, 20:37].copy()
    mask = (rng.random(template.shape) > 0.25).astype(np.uint8)
    reference = cv2.matchTemplate(frame, template, CV_METHODS[method], mask=mask)
    for algorithm in ("direct", "spectral"):
        compare(match(frame, [template], method=method, masks=[mask], algorithm=algorithm)[0], reference, method)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "sqdiff_normed"])
def test_matches_opencv_with_weighted_mask(method):
    # OpenCV's masked sqdiff_normed skips the clamping its unmasked path does
    # (ratios above 1.125 stay as they are); featuremap clamps both the same
    # way, so that one method is checked against tests/naive.py instead.
    rng = np.random.default_rng(4)
    frame = structured_image(rng, 50, 60, 3, np.float32)
    template = frame[12:25, 20:37].copy()
    weights = rng.random(template.shape[:2]).astype(np.float32)
    reference = cv2.matchTemplate(frame, template, CV_METHODS[method], mask=np.dstack([weights] * 3))
    compare(match(frame, [template], method=method, masks=[weights])[0], reference, method)
