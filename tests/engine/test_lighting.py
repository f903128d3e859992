"""The plain decision's lighting test (``engine.lighting``) on crops of real photographs: every lighting
of its envelope passes, lightings outside it do not, masks and colour planes hold, and the frame path
cuts a window at the frame's edge to the part inside.
"""

import cv2
import numpy as np
import pytest
from skimage import data

from featuremap.service.engine import lighting
from featuremap.service.engine.texture import DEFAULTS, MAX_THRESHOLD, PLAIN, is_plain, plain_threshold
from featuremap.service.pipeline.matching import _lit_alike
from featuremap.service.store.variants import Variant
from featuremap.wire import Peak


def crop(colour: bool) -> np.ndarray:
    """A 48x48 window of the cat's fur (levels 76-140 in every channel, so no lighting below clips
    it), HxWxC uint8."""
    photo = cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR)
    window = photo[48:96, 400:448]
    return window if colour else cv2.cvtColor(window, cv2.COLOR_BGR2GRAY)[:, :, None]


def lit(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(np.round(image.astype(np.float64) * gain + offset), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("colour", [False, True], ids=["gray", "colour"])
@pytest.mark.parametrize("gain", [lighting.GAIN[0], 1.0, lighting.GAIN[1]])
@pytest.mark.parametrize("offset", [-lighting.OFFSET, 0.0, lighting.OFFSET])
def test_every_lighting_of_the_envelope_is_lit_alike(colour, gain, offset):
    template = crop(colour)
    window = lit(template, gain, offset)
    assert window.min() > 0 and window.max() < 255  # nothing clipped: the lighting is what it says
    assert lighting.lit_alike_window(template, None, window)


# Gain and offset trade against each other (a darker window is also a lower gain within the contrast's
# tolerance), so outside means a contrast no gain reaches or a brightness no offset does.
@pytest.mark.parametrize("colour", [False, True], ids=["gray", "colour"])
@pytest.mark.parametrize("gain, offset", [(0.3, 0.0), (2.5, -100.0), (1.0, 110.0)])
def test_lightings_outside_the_envelope_are_not(colour, gain, offset):
    template = crop(colour)
    assert not lighting.lit_alike_window(template, None, lit(template, gain, offset))


def test_a_masked_out_pixel_does_not_count():
    template = crop(False)
    mask = np.ones(template.shape[:2], np.uint8)
    mask[:, :12] = 0
    window = lit(template, 1.2, 10.0)
    window[:, :12] = 255  # a glare where the template is masked out
    assert lighting.lit_alike_window(template, mask, window)
    assert not lighting.lit_alike_window(template, None, window)


def test_a_logo_whose_detail_is_in_colour_alone_is_held_to_its_colour_plane():
    # Red on blue of equal brightness: flat in the channels' mean, not in its principal direction.
    logo = np.zeros((32, 32, 3), np.uint8)
    logo[:] = (200, 40, 40)
    logo[8:24, 8:24] = (40, 40, 200)
    direction = lighting.colour_direction(logo, None)
    assert direction is not None and abs(abs(direction[0]) - abs(direction[2])) < 1e-9 and abs(direction[1]) < 1e-9
    assert lighting.lit_alike_window(logo, None, lit(logo, 0.8, 0.0))
    swapped = logo[:, :, ::-1].copy()  # blue on red: the same shape, the colours the other way round
    assert not lighting.lit_alike_window(logo, None, swapped)


def test_a_flat_template_is_lit_alike_to_nothing():
    flat = np.full((16, 16, 1), 90, np.uint8)
    assert not lighting.lit_alike_window(flat, None, flat)


def test_plain_templates_are_those_at_or_over_plain():
    method = next(iter(DEFAULTS))
    assert not is_plain(DEFAULTS[method], method) and not is_plain(PLAIN - 1e-4, method) and is_plain(PLAIN, method)
    assert not is_plain(0.95, "sqdiff")  # an uncalibrated method has no plain templates
    for threshold in (0.7, 0.75, PLAIN - 1e-4):
        assert plain_threshold(threshold, method) == threshold  # not plain: the texture threshold stays
    for threshold in (PLAIN, 0.9, 0.99):
        assert DEFAULTS[method] <= plain_threshold(threshold, method) <= threshold
    assert plain_threshold(MAX_THRESHOLD, method) == MAX_THRESHOLD


def test_the_frame_path_cuts_a_window_at_the_frames_corner_to_the_part_inside():
    template = crop(False)[:40, :30]
    variant = Variant("a", "1", template, None, "a", 1.0, 0.0)
    frame = np.full((100, 120, 1), 7, np.uint8)
    # The template's top-left at (-10, -5), lit 1.2 times plus 10: only its [5:, 10:] inside.
    frame[0:35, 0:20] = lit(template[5:, 10:], 1.2, 10.0)
    at = Peak.centred("a", -10 + 14.5, -5 + 19.5, 30, 40, 0.99)
    assert _lit_alike(at, [variant], frame)
    frame[0:35, 0:20] = lit(template[5:, 10:], 3.0, -150.0)  # three times the contrast
    assert not _lit_alike(at, [variant], frame)
    outside = Peak.centred("a", -40.0, -50.0, 30, 40, 0.99)  # wholly outside: nothing to hold to a lighting
    assert not _lit_alike(outside, [variant], frame)
