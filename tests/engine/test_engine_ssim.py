"""The ssim method against a float64 reference and scikit-image."""

import numpy as np
import pytest

from featuremap.service.engine import Matcher, find_peaks

from images import random_image, structured_image
from bounds import ssim_bound
from naive import naive_ssim


@pytest.mark.parametrize("algorithm", ["direct", "spectral"])
@pytest.mark.parametrize("padding,border", [("valid", "constant"), ("same", "reflect"), ("full", "replicate")])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32], ids=["u8", "f32"])
def test_matches_the_reference(algorithm, padding, border, stride, channels, dtype):
    rng = np.random.default_rng(channels * 10 + stride)
    frame = random_image(rng, 14, 17, channels, dtype)
    templates = [random_image(rng, 5, 4, channels, dtype), frame[3:9, 2:9].copy()]
    data_range = 255.0 if dtype == np.uint8 else 1.0
    maps = Matcher(templates, method="ssim", padding=padding, border=border, stride=stride,
                   algorithm=algorithm)(frame)
    for template, result in zip(templates, maps):
        reference = naive_ssim(frame, template, data_range=data_range, padding=padding, border=border, stride=stride)
        assert result.shape == reference.shape
        bound = ssim_bound(frame, template, data_range=data_range, algorithm=algorithm, padding=padding,
                           border=border, stride=stride)
        assert (np.abs(result - reference) <= bound).all()
        assert result.min() >= -1 and result.max() <= 1 and np.isfinite(result).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_matches_scikit_image_at_the_peak(channels):
    skimage = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(channels)
    frame = structured_image(rng, 90, 120, channels, np.uint8)
    template = frame[30:45, 50:65].copy()  # 15 x 15: skimage's window is the whole template
    noisy = np.clip(frame.astype(int) + rng.integers(-20, 21, frame.shape), 0, 255).astype(np.uint8)
    score_map = Matcher([template], method="ssim")(noisy)[0]
    peak = find_peaks(score_map, method="ssim")[0]
    assert (peak.x, peak.y) == (50, 30)
    window = noisy[30:45, 50:65]
    expected = skimage.structural_similarity(window, template, data_range=255, use_sample_covariance=True,
                                             gaussian_weights=False, win_size=15,
                                             channel_axis=-1 if channels == 3 else None)
    assert peak.score == pytest.approx(expected, abs=1e-4)


def test_degenerate_and_bad_inputs():
    flat = np.full((20, 20), 100, np.uint8)
    result = Matcher([flat[:5, :5]], method="ssim")(flat)[0]
    assert np.allclose(result, 1.0)  # identical flat windows: SSIM 1, not NaN
    zero = Matcher([np.zeros((5, 5), np.float32)], method="ssim")(np.zeros((20, 20), np.float32))[0]
    assert np.isfinite(zero).all()
    with pytest.raises(ValueError, match="ssim does not take masks"):
        Matcher([flat[:5, :5]], method="ssim", masks=[np.ones((5, 5), np.uint8)])
    with pytest.raises(ValueError, match="data_range must be a positive number"):
        Matcher([flat[:5, :5]], method="ssim", data_range=0)
