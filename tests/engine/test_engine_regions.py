"""Dark, bright and low-contrast regions of a real photograph, against the float64 reference.

A window is flat only when its own variance is within rounding of zero at
the data's magnitude: near-black and near-white windows with real variance
are scored like any other (they used to score 0 when judged against energy
measured from the frame's global mean).
"""

import functools

import cv2
import numpy as np
import pytest

from featuremap.service.engine import Matcher, find_peaks

from bounds import allowed_error, assert_within, map_bound
from naive import naive_match

skimage_data = pytest.importorskip("skimage.data")

# (y, x) of 24x24 templates in scikit-image's astronaut, gray: mean, standard deviation.
REGIONS = {
    "near-black": (306, 368),  # mean 0.8, std 3.4
    "dark": (314, 368),  # mean 0.7, std 2.8
    "dark-textured": (298, 368),  # mean 2.4, std 11.8
    "bright-low-contrast": (32, 312),  # mean 200.8, std 2.6
    "bright": (16, 360),  # mean 210.2, std 3.4
}


@pytest.fixture(scope="module")
def astronaut():
    return cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2GRAY)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("algorithm", ["direct", "spectral"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("region", REGIONS)
def test_regions_of_a_photograph_match_the_float64_reference(astronaut, region, dtype, algorithm, masked):
    y, x = REGIONS[region]
    # A crop with the region and what surrounds it (bright and dark alike).
    top, left = max(0, y - 60), max(0, x - 60)
    frame = astronaut[top:top + 144, left:left + 144]
    frame = frame if dtype == np.uint8 else frame.astype(np.float32) / 255.0
    template = frame[y - top:y - top + 24, x - left:x - left + 24].copy()
    # A rotated variant's mask: the corners off.
    mask = (np.hypot(*np.mgrid[-11.5:12.5, -11.5:12.5]) <= 12).astype(np.uint8) if masked else None
    result = Matcher([template], method="ccoeff_normed", algorithm=algorithm, masks=[mask])(frame)[0]
    reference = naive_match(frame.astype(np.float64), template.astype(np.float64), method="ccoeff_normed",
                            mask=mask)
    # Within the float32 bound of the computation everywhere (a near-black window next to bright
    # ones has the largest: its operands are far from the frame's mean). Before, such windows
    # scored 0 (errors to 0.53; masked ones, whose statistics came from float32 correlations, to 0.34).
    # Flat exactly where the reference's variance is exactly 0 (uint8 data: exact in float64):
    # the convention's 0 there, and a score within bound everywhere else.
    bound = map_bound(frame, template, method="ccoeff_normed", algorithm=algorithm, mask=mask)
    assert_within(result, reference, bound, "ccoeff_normed", region)
    (peak,) = find_peaks(result, method="ccoeff_normed")
    assert (peak.x, peak.y) == (x - left, y - top) and peak.score > 0.999


@pytest.mark.parametrize("region", ["near-black", "dark"])
def test_a_template_from_a_dark_region_is_found_in_the_whole_photograph(astronaut, region):
    y, x = REGIONS[region]
    template = astronaut[y:y + 24, x:x + 24].copy()
    result = Matcher([template], method="ccoeff_normed")(astronaut)[0]
    (peak,) = find_peaks(result, method="ccoeff_normed")
    assert (peak.x, peak.y) == (x, y) and peak.score > 0.999
    assert np.isfinite(result).all() and np.abs(result).max() <= 1.0


@pytest.mark.parametrize("algorithm", ["direct", "spectral"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("method", ["sqdiff", "sqdiff_normed", "ccoeff_normed", "ccorr_normed", "ccoeff"])
def test_a_bright_low_contrast_frame_against_the_float64_reference(astronaut, method, masked, algorithm):
    # 0.9 plus a texture of 1%: the sqdiff terms cancel to a part in 10^4, and OpenCV's own
    # sqdiff and sqdiff_normed are off by 1.4e-2 of the map's range here, its ccoeff_normed by 0.88.
    frame = (0.9 + 0.01 * astronaut[200:296, 150:278].astype(np.float32) / 255).astype(np.float32)
    template = frame[30:54, 40:64].copy()
    mask = (np.random.default_rng(0).random(template.shape) > 0.3).astype(np.uint8) if masked else None
    result = Matcher([template], method=method, algorithm=algorithm, masks=[mask] if masked else None)(frame)[0]
    reference = naive_match(frame.astype(np.float64), template.astype(np.float64), method=method, mask=mask)
    assert_within(result, reference, map_bound(frame, template, method=method, algorithm=algorithm, mask=mask),
                  method)


CODES = {"sqdiff": cv2.TM_SQDIFF, "sqdiff_normed": cv2.TM_SQDIFF_NORMED, "ccorr": cv2.TM_CCORR,
         "ccorr_normed": cv2.TM_CCORR_NORMED, "ccoeff": cv2.TM_CCOEFF, "ccoeff_normed": cv2.TM_CCOEFF_NORMED}


@functools.lru_cache(maxsize=None)
def photograph_case(method, masked, dtype_name):
    """A crop of the astronaut (dark suit, bright background), two templates cut from it, their references."""
    gray = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2GRAY)[100:196, 150:262]
    frame = gray if dtype_name == "uint8" else gray.astype(np.float32) / 255
    rng = np.random.default_rng(0)
    cases = []
    for y, x, k in [(10, 20, 16), (50, 60, 20)]:
        template = frame[y:y + k, x:x + k].copy()
        mask = (rng.random(template.shape) > 0.3).astype(np.uint8) if masked else None
        reference = naive_match(frame.astype(np.float64), template.astype(np.float64), method=method, mask=mask)
        cases.append((template, mask, reference))
    return frame, cases


@pytest.mark.parametrize("algorithm", ["direct", "spectral"])
@pytest.mark.parametrize("dtype_name", ["uint8", "float32"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("method", list(CODES))
def test_as_accurate_as_opencv_on_a_photograph(method, masked, dtype_name, algorithm):
    # Errors as a fraction of the reference map's range, against the float64 reference.
    frame, cases = photograph_case(method, masked, dtype_name)
    for template, mask, reference in cases:
        scale = np.abs(reference).max()
        ours = Matcher([template], method=method, algorithm=algorithm, masks=[mask])(frame)[0]
        theirs = cv2.matchTemplate(frame, template, CODES[method], mask=mask)
        theirs = np.nan_to_num(theirs, nan=0.0, posinf=0.0, neginf=0.0)  # OpenCV's masked sqdiff_normed
        error = np.abs(ours - reference).max() / scale
        opencv = np.abs(theirs - reference).max() / scale
        # Within the float32 bound of our computation, and at OpenCV's error or better wherever
        # that bound allows less than OpenCV's error (its masked path runs in float64: it may
        # be the better one there, never by more than our bound).
        bound = map_bound(frame, template, method=method, algorithm=algorithm, mask=mask)
        assert_within(ours, reference, bound, method)
        limit = allowed_error(reference, bound, method)
        allowed = float(limit[np.isfinite(limit)].max()) / scale
        assert error <= max(opencv, allowed), (error, opencv, allowed)
