"""Inputs at the edges of float32: every finite input gives finite, correct maps.

float32 squares overflow near 1e19 and products underflow near 1e-19; the
engine scales frame, templates and mask weights by powers of two when their
magnitudes leave [2^-40, 2^40], so the normalised maps do not change when the
frame and the template are scaled together, and the others scale as they must.
"""

import numpy as np
import pytest

from featuremap.service.pipeline import codec
from featuremap.service.engine import METHODS, Matcher, find_peaks
from featuremap.wire import map_array
from featuremap.v1 import featuremap_pb2 as pb

from bounds import allowed_error, assert_within, map_bound, ssim_bound
from naive import naive_match, naive_ssim

NORMALISED = ("sqdiff_normed", "ccorr_normed", "ccoeff_normed", "ssim")
UNNORMALISED = ("sqdiff", "ccorr", "ccoeff")


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    frame = rng.random((48, 64)).astype(np.float32) + np.float32(0.5)
    return frame, frame[10:22, 20:36].copy()


def scaled(array: np.ndarray, scale: float) -> np.ndarray:
    return (array.astype(np.float64) * scale).astype(np.float32)


def assert_normalised(result, frame, template, method, algorithm="auto", mask=None, **ssim):
    """A normalised map of extreme inputs against the float64 reference of those very inputs.

    The engine scales them by powers of two (exact) into float32's comfortable range; the
    bound of the computation is scale-free for the normalised methods, so it is the same.
    """
    if method == "ssim":
        reference = naive_ssim(frame, template, **ssim)
        assert (np.abs(result - reference) <= ssim_bound(frame, template, algorithm=algorithm, **ssim)).all()
        return
    reference = naive_match(frame, template, method=method, mask=mask)
    assert_within(result, reference, map_bound(frame, template, method=method, algorithm=algorithm, mask=mask),
                  method)


@pytest.mark.parametrize("algorithm", ["direct", "spectral"])
@pytest.mark.parametrize("scale", [1e18, 1e30, 1e-18, 1e-30])
@pytest.mark.parametrize("method", METHODS)
def test_frame_and_template_scaled_together(scene, method, scale, algorithm):
    frame, template = scene
    reference = Matcher([template], method=method, algorithm=algorithm)(frame)[0]
    data_range = {"data_range": scale} if method == "ssim" else {}  # ssim's constants scale with the data
    result = Matcher([scaled(template, scale)], method=method, algorithm=algorithm, **data_range)(
        scaled(frame, scale))[0]
    assert np.isfinite(result).all()
    if method in NORMALISED:
        assert_normalised(result, scaled(frame, scale), scaled(template, scale), method, algorithm,
                          **({"data_range": scale} if method == "ssim" else {}))
        (peak,) = find_peaks(result, method=method)
        assert (peak.x, peak.y) == (20, 10)
        return
    # The unnormalised maps scale with frame and template: the float64 reference of the scaled
    # inputs, within the bound of the computation where float32 can hold it (plus half its
    # smallest subnormal, where the power-of-two scale back rounds); past its largest value,
    # clamped to it.
    big_frame, big_template = scaled(frame, scale), scaled(template, scale)
    expected = naive_match(big_frame, big_template, method=method)
    limit = allowed_error(expected, map_bound(big_frame, big_template, method=method, algorithm=algorithm),
                          method) + 2.0 ** -150
    largest = float(np.finfo(np.float32).max)
    big = np.abs(expected) - limit > largest
    assert (np.abs(result[big]) == largest).all()
    within = np.abs(expected) + limit < largest
    assert (np.abs(result[within] - expected[within]) <= limit[within]).all()
    if big.any() or (np.abs(expected) < float(np.finfo(np.float32).tiny) * 1e4).any():
        return  # clamped or underflowed: no peak to find
    (peak,) = find_peaks(result, method=method)
    assert (peak.x, peak.y) == (20, 10) or method == "sqdiff" and result[10, 20] == result.min()


@pytest.mark.parametrize("method", METHODS)
def test_frames_near_the_largest_float32_give_finite_maps(scene, method):
    frame, template = scene
    huge = scaled(frame / frame.max(), 3.0e38)
    result = Matcher([template], method=method)(huge)[0]
    assert np.isfinite(result).all()
    if method in ("ccorr_normed", "ccoeff_normed"):
        assert_normalised(result, huge, template, method)


def test_a_frame_and_a_template_of_very_different_magnitudes(scene):
    frame, template = scene
    for frame_scale, template_scale in ((1e18, 1.0), (1.0, 1e-20), (1e-25, 1e25)):
        big_frame, big_template = scaled(frame, frame_scale), scaled(template, template_scale)
        result = Matcher([big_template], method="ccoeff_normed")(big_frame)[0]
        assert_normalised(result, big_frame, big_template, "ccoeff_normed")


@pytest.mark.parametrize("method", ["sqdiff_normed", "ccorr_normed", "ccoeff_normed", "ccorr"])
def test_mask_weights_of_1e30(scene, method):
    frame, template = scene
    weights = np.ones(template.shape, np.float32)
    weights[:, :4] = 0.25
    heavy = weights * np.float32(1e30)
    result = Matcher([template], method=method, masks=[heavy])(frame)[0]
    assert np.isfinite(result).all()
    if method != "ccorr":  # the normalised ones do not change; ccorr scales by 1e60, past float32: clamped
        assert_normalised(result, frame, template, method, mask=heavy)
    else:
        assert (result == np.finfo(np.float32).max).all()


@pytest.mark.parametrize("encoding", ["float16", "uint8", "float32"])
def test_extreme_maps_encode_to_finite_scales(encoding):
    score_map = np.array([[3.0e38, -3.0e38], [1.0, 0.0]], np.float32)
    data, scale, offset = codec.encode_map(score_map, encoding)
    assert np.isfinite(scale) and np.isfinite(offset)
    message = pb.FeatureMap(height=2, width=2, encoding=pb.MapEncoding.Value(f"MAP_ENCODING_{encoding.upper()}"),
                            data=bytes(data), scale=scale, offset=offset)
    decoded = map_array(message)
    assert np.isfinite(decoded).all() and abs(decoded[0, 0] - 3.0e38) <= 0.01 * 3.0e38
