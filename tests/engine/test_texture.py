"""A template's own threshold: plain templates are raised above 0.7, textured ones keep it."""

import cv2
import numpy as np
import pytest
import skimage.data

from featuremap.service.engine import OptionError, OptionTypeError
from featuremap.service.engine import texture
from featuremap.service.engine.texture import (
    MAX_THRESHOLD,
    REFERENCE_WINDOWS,
    background_scores,
    calibrated_threshold,
    for_frame,
    threshold_from_score,
)


def gray_photo(name):
    image = getattr(skimage.data, name)()
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def soft_gradient(size=64, low=90, high=130):
    return np.tile(np.linspace(low, high, size), (size, 1)).astype(np.uint8)


def shaded_flat_patch(size=48):
    """A flat patch as a camera gives it: one grey with a faint vignette (a few levels)."""
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    return np.round(140 - 12 * (x * x + y * y)).astype(np.uint8)


def textured_crop():
    """Coffee beans, grass, text: the texture of a real photograph."""
    return gray_photo("gravel")[200:264, 200:264]


# Plain templates are raised clearly above 0.7; textured ones keep 0.7.


@pytest.mark.parametrize(
    "template",
    [soft_gradient(), soft_gradient(32, 40, 200), shaded_flat_patch(), gray_photo("camera")[10:58, 300:348]],
    ids=["soft gradient", "strong small gradient", "shaded flat patch", "sky of a photograph"],
)
def test_plain_templates_get_a_raised_threshold(template):
    assert template.std() > 0.5  # not flat: the engine would score it
    threshold = calibrated_threshold(template)
    assert threshold >= 0.85, threshold
    assert threshold <= texture.MAX_THRESHOLD


@pytest.mark.parametrize(
    "template",
    [textured_crop(), gray_photo("brick")[100:164, 100:164], gray_photo("text")[40:104, 60:188]],
    ids=["gravel", "brick", "text"],
)
def test_textured_photograph_crops_keep_the_default(template):
    assert calibrated_threshold(template) <= 0.72


def test_a_flat_template_gets_the_highest_threshold():
    # No variance: the engine scores it 0 everywhere; no score could tell it apart.
    assert calibrated_threshold(np.full((32, 32), 77, np.uint8)) == texture.MAX_THRESHOLD
    assert np.all(background_scores(np.zeros((8, 8), np.float32)) == 1.0)


def test_plainer_means_higher():
    # The same noise, blurred more and more: fewer independent pixels, more chance fits.
    noise = np.random.default_rng(3).normal(0, 40, (64, 64)).astype(np.float32) + 128
    blurred = [np.clip(cv2.GaussianBlur(noise, (0, 0), sigma), 0, 255).astype(np.uint8) for sigma in (0.5, 2, 6, 8, 12)]
    best = [background_scores(t).max() for t in blurred]
    assert all(a < b for a, b in zip(best, best[1:])), best
    thresholds = [calibrated_threshold(t) for t in blurred]
    assert thresholds[:2] == [0.7, 0.7]
    assert 0.7 < thresholds[2] < thresholds[3] < thresholds[4], thresholds


# The rule itself.


def test_the_rule():
    assert threshold_from_score(0.0) == threshold_from_score(-0.5) == threshold_from_score(0.6) == 0.7
    assert threshold_from_score(0.8) == pytest.approx(np.tanh(texture.K * np.arctanh(0.8)), abs=1e-4)
    values = [threshold_from_score(s) for s in np.linspace(0.64, 1.0, 50)]
    assert all(a <= b for a, b in zip(values, values[1:]))  # never lower for a better chance score
    assert values[-1] == texture.MAX_THRESHOLD
    assert all(0.7 <= v <= texture.MAX_THRESHOLD for v in values)
    assert threshold_from_score(0.9, k=1.0) == pytest.approx(0.9)


# Deterministic, whatever the layout and type of the same template.


def test_deterministic():
    template = gray_photo("coffee")[100:148, 300:348]
    first = calibrated_threshold(template)
    texture.backgrounds.cache_clear()  # made again, from the same seed
    assert calibrated_threshold(template) == first
    assert [b.flags.writeable for b in texture.backgrounds()] == [False] * len(texture.backgrounds())


def test_layouts_and_types_agree():
    template = gray_photo("camera")[200:248, 200:248]
    expected = calibrated_threshold(template)
    bgr = np.repeat(template[:, :, None], 3, axis=2)
    bgra = np.concatenate([bgr, np.full_like(template[:, :, None], 255)], axis=2)
    assert calibrated_threshold(template[:, :, None]) == expected
    assert calibrated_threshold(bgr) == pytest.approx(expected, abs=2e-4)
    assert calibrated_threshold(bgra) == pytest.approx(expected, abs=2e-4)
    assert calibrated_threshold(template.astype(np.float32) / 255) == pytest.approx(expected, abs=2e-4)
    assert calibrated_threshold(template.astype(np.float64) * 1000) == pytest.approx(expected, abs=2e-4)
    assert calibrated_threshold(np.asfortranarray(template)) == expected
    readonly = template.copy()
    readonly.flags.writeable = False
    assert calibrated_threshold(readonly) == expected


def test_large_templates_are_calibrated_shrunk():
    assert calibrated_threshold(soft_gradient(400)) >= 0.9
    assert calibrated_threshold(gray_photo("gravel")[50:450, 50:350]) <= 0.72


# Masks: only what the mask keeps counts.


def test_masks_are_honoured():
    plain, textured = soft_gradient(48), textured_crop()[:48, :48]
    template = np.hstack([plain, textured])
    left = np.zeros(template.shape, np.uint8)
    left[:, :48] = 1
    right = (1 - left).astype(bool)
    assert calibrated_threshold(template, mask=left) == pytest.approx(calibrated_threshold(plain), abs=0.02)
    assert calibrated_threshold(template, mask=left) >= 0.85
    assert calibrated_threshold(template, mask=right) <= 0.75
    # Float weights: the same as binary where they are 0 and 1.
    assert calibrated_threshold(template, mask=left.astype(np.float32)) == pytest.approx(calibrated_threshold(template, mask=left), abs=2e-4)
    # Weights (OpenCV's masked path with weights): scaling them all changes nothing.
    assert calibrated_threshold(template, mask=left * np.float32(0.5)) == pytest.approx(calibrated_threshold(template, mask=left), abs=2e-3)
    # A mask that keeps only a flat part: nothing to match.
    flat = np.hstack([np.full((48, 48), 50, np.uint8), textured])
    assert calibrated_threshold(flat, mask=left) == texture.MAX_THRESHOLD


def test_an_all_ones_mask_is_no_mask():
    template = gray_photo("coffee")[100:148, 300:348]
    assert calibrated_threshold(template, mask=np.ones(template.shape, np.uint8)) == pytest.approx(calibrated_threshold(template), abs=2e-3)


# Methods and bad input.


@pytest.mark.parametrize("method", ["sqdiff", "sqdiff_normed", "ccorr", "ccorr_normed", "ccoeff", "ssim"])
def test_other_methods_get_none(method):
    assert calibrated_threshold(soft_gradient(), method) is None


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda: calibrated_threshold(soft_gradient(), "ncc"), OptionError, "unknown method 'ncc'"),
        (lambda: calibrated_threshold(soft_gradient(), 3), OptionTypeError, "method must be a string"),
        (lambda: calibrated_threshold([[1, 2], [3, 4]]), OptionTypeError, "numpy array"),
        (lambda: calibrated_threshold(np.zeros((8, 8), np.int16)), OptionTypeError, "int16"),
        (lambda: calibrated_threshold(np.full((8, 8), np.nan, np.float32)), OptionError, "NaN or inf"),
        (lambda: calibrated_threshold(np.zeros((8, 8, 2), np.uint8)), OptionError, "2 channels"),
        (lambda: calibrated_threshold(np.zeros((0, 8), np.uint8)), OptionError, "empty"),
        (lambda: calibrated_threshold(soft_gradient(), mask=np.ones((5, 5), np.uint8)), OptionError, "must match its template"),
        (lambda: calibrated_threshold(soft_gradient(), mask=np.ones((64, 64), np.int32)), OptionTypeError, "dtype int32"),
        (lambda: calibrated_threshold(soft_gradient(), mask=[[1]]), OptionTypeError, "numpy array"),
        # Bad input is refused for every method, even those without a calibrated threshold.
        (lambda: calibrated_threshold(np.zeros((8, 8), np.int16), "sqdiff"), OptionTypeError, "int16"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
    assert issubclass(error, ValueError)


# Frames larger than the rule was fitted on.


def test_a_larger_frame_makes_a_plain_templates_threshold_stricter_never_a_textured_ones():
    vga, large = REFERENCE_WINDOWS, 4000 * 3000
    assert for_frame(0.9, vga) == 0.9 and for_frame(0.9, 320 * 240) == 0.9  # never lowered
    assert for_frame(0.7, large) == 0.7  # at the default: a textured template keeps it
    raised = [for_frame(0.8, windows) for windows in (vga, 2 * vga, 10 * vga, 100 * vga)]
    assert raised[0] == 0.8 and all(a < b for a, b in zip(raised, raised[1:]))
    # In Fisher's z, by sqrt(ln N / ln N_ref): 0.8 at VGA is 0.8477 in 12 MP.
    assert for_frame(0.8, large) == pytest.approx(np.tanh(np.arctanh(0.8) * np.sqrt(np.log(large) / np.log(vga))),
                                                   abs=1e-4)
    assert for_frame(0.9999, 10 ** 12) <= MAX_THRESHOLD
    assert for_frame(0.9, large, "sqdiff") == 0.9  # a method without a calibrated threshold: unchanged


def test_a_logo_whose_detail_is_in_colour_alone_is_not_calibrated_flat():
    # Red on blue: the channels' mean is flat (every pixel 85), the colours are not. Calibrated on
    # the mean it got 0.9999 and was never found; its principal colour plane is the checker itself.
    yy, xx = np.mgrid[0:48, 0:48]
    checker = ((yy // 8 + xx // 8) % 2).astype(bool)
    logo = np.zeros((48, 48, 3), np.uint8)
    logo[checker], logo[~checker] = (255, 0, 0), (0, 0, 255)
    assert logo.mean(axis=2).std() == 0
    assert calibrated_threshold(logo) == calibrated_threshold(np.where(checker, 255, 0).astype(np.uint8)) < 0.8
