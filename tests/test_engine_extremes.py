"""Inputs at the edges of float32: every finite input gives finite, correct maps.

float32 squares overflow near 1e19 and products underflow near 1e-19; the
engine scales frame, templates and mask weights by powers of two when their
magnitudes leave [2^-40, 2^40], so the normalised maps do not change when the
frame and the template are scaled together, and the others scale as they must.
"""

import numpy as np
import pytest

from featuremap.service import codec
from featuremap.service.engine import METHODS, Matcher, find_peaks
from featuremap.wire import map_array
from featuremap.v1 import featuremap_pb2 as pb

NORMALISED = ("sqdiff_normed", "ccorr_normed", "ccoeff_normed", "ssim")
UNNORMALISED = ("sqdiff", "ccorr", "ccoeff")


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    frame = rng.random((48, 64)).astype(np.float32) + np.float32(0.5)
    return frame, frame[10:22, 20:36].copy()


def scaled(array: np.ndarray, scale: float) -> np.ndarray:
    return (array.astype(np.float64) * scale).astype(np.float32)


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
        assert np.abs(result - reference).max() < 1e-4
        (peak,) = find_peaks(result, method=method)
        assert (peak.x, peak.y) == (20, 10)
        return
    # The unnormalised maps scale with frame and template: scale^2 times the reference, where
    # float32 can hold it; past its largest value, clamped to it; below its smallest, 0.
    expected = reference.astype(np.float64) * scale * scale
    # Where the reference is more than its own rounding (sqdiff is ~1e-7 at the match, not 0).
    clear = np.abs(reference) > 1e-3 * np.abs(reference).max()
    big = clear & (np.abs(expected) >= np.finfo(np.float32).max)
    assert (np.abs(result[big]) == np.finfo(np.float32).max).all()
    normal = clear & ~big & (np.abs(expected) >= np.finfo(np.float32).tiny * 1e4)
    if normal.any():
        assert np.abs(result[normal] - expected[normal]).max() <= 1e-4 * np.abs(expected[normal]).max()
    if normal.sum() == clear.sum():
        (peak,) = find_peaks(result, method=method)
        assert (peak.x, peak.y) == (20, 10) or method == "sqdiff" and result[10, 20] == result.min()


@pytest.mark.parametrize("method", METHODS)
def test_frames_near_the_largest_float32_give_finite_maps(scene, method):
    frame, template = scene
    huge = scaled(frame / frame.max(), 3.0e38)
    result = Matcher([template], method=method)(huge)[0]
    assert np.isfinite(result).all()
    if method in ("ccorr_normed", "ccoeff_normed"):
        reference = Matcher([template], method=method)(frame / frame.max())[0]
        assert np.abs(result - reference).max() < 1e-4


def test_a_frame_and_a_template_of_very_different_magnitudes(scene):
    frame, template = scene
    reference = Matcher([template], method="ccoeff_normed")(frame)[0]
    for frame_scale, template_scale in ((1e18, 1.0), (1.0, 1e-20), (1e-25, 1e25)):
        result = Matcher([scaled(template, template_scale)], method="ccoeff_normed")(scaled(frame, frame_scale))[0]
        assert np.abs(result - reference).max() < 1e-4


@pytest.mark.parametrize("method", ["sqdiff_normed", "ccorr_normed", "ccoeff_normed", "ccorr"])
def test_mask_weights_of_1e30(scene, method):
    frame, template = scene
    weights = np.ones(template.shape, np.float32)
    weights[:, :4] = 0.25
    reference = Matcher([template], method=method, masks=[weights])(frame)[0]
    result = Matcher([template], method=method, masks=[weights * np.float32(1e30)])(frame)[0]
    assert np.isfinite(result).all()
    if method != "ccorr":  # the normalised ones do not change; ccorr scales by 1e60, past float32: clamped
        assert np.abs(result - reference).max() < 1e-4


@pytest.mark.parametrize("encoding", ["float16", "uint8", "float32"])
def test_extreme_maps_encode_to_finite_scales(encoding):
    score_map = np.array([[3.0e38, -3.0e38], [1.0, 0.0]], np.float32)
    data, scale, offset = codec.encode_map(score_map, encoding)
    assert np.isfinite(scale) and np.isfinite(offset)
    message = pb.FeatureMap(height=2, width=2, encoding=pb.MapEncoding.Value(f"MAP_ENCODING_{encoding.upper()}"),
                            data=bytes(data), scale=scale, offset=offset)
    decoded = map_array(message)
    assert np.isfinite(decoded).all() and abs(decoded[0, 0] - 3.0e38) <= 0.01 * 3.0e38
