"""The one rotation of a template (engine/turn.py), as the bank's variants and pose search use it."""

import math

import cv2
import numpy as np
import pytest
import skimage.data

from featuremap.boxes import turned_canvas
from featuremap.service.engine import Matcher
from featuremap.service.engine.pose.template import PoseTemplate
from featuremap.service.engine.turn import WHOLE, covered, draw, turn_map
from featuremap.service.store.variants import make_variant


def test_the_identity_draws_the_template_as_it_is():
    image = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    matrix = turn_map((6.0, 4.0), (13, 9), 0.0)
    assert np.array_equal(draw(image, matrix, (13, 9)), image)
    assert covered((9, 13), matrix, (13, 9)).min() == 1.0


@pytest.mark.parametrize("quarters", [1, 2, 3])
def test_quarter_turns_are_numpy_s_counter_clockwise_turns(quarters):
    image = np.arange(35, dtype=np.uint8).reshape(5, 7)
    canvas = turned_canvas(7, 5, 90 * quarters)
    matrix = turn_map((3.0, 2.0), canvas, 90.0 * quarters)
    assert np.array_equal(draw(image, matrix, canvas), np.rot90(image, quarters))
    assert covered(image.shape, matrix, canvas).min() == 1.0


def _counted_pixels_blend_only_the_template(image, mask, matrix, canvas):
    """The counted pixels of a turned image are interpolated from the template's pixels: lifting every
    template pixel by 50 lifts each of them by 50, but for the 1 - WHOLE of a weight that OpenCV's
    1/32-pixel interpolation table may leave to the canvas's zero border (a rim pixel: up to 50)."""
    lifted = draw(image.astype(np.float32) + 50.0, matrix, canvas) - draw(image.astype(np.float32), matrix, canvas)
    counted = mask > 0
    assert counted.any()
    assert np.abs(lifted[counted] - 50.0).max() <= 50.0 * (1.0 - WHOLE) + 1e-4


@pytest.mark.parametrize("angle", [7.5, 30.0, 45.0, -60.0, 135.0, 200.0])
@pytest.mark.parametrize("scale", [1.0, 0.6, 1.7])
def test_a_variant_counts_only_the_pixels_its_template_covers_whole(angle, scale):
    rng = np.random.default_rng(abs(int(angle * 10)) + int(scale * 100))
    image = rng.integers(0, 256, (17, 26, 1), dtype=np.uint8)
    variant, mask = make_variant(image, None, scale, angle)
    height, width = variant.shape[:2]
    resized = cv2.resize(image, (round(26 * scale), round(17 * scale)), interpolation=cv2.INTER_AREA
                         if scale < 1 else cv2.INTER_LINEAR).reshape(round(17 * scale), round(26 * scale), 1)
    matrix = turn_map(((resized.shape[1] - 1) / 2, (resized.shape[0] - 1) / 2), (width, height), angle)
    _counted_pixels_blend_only_the_template(resized, mask, matrix, (width, height))
    # ... and the mask leaves out no pixel the template covers with room to spare: the source point of
    # every canvas pixel a tenth of a pixel inside the template's box is counted.
    a, b, c, d, e, f = matrix
    y, x = np.mgrid[:height, :width]
    sx, sy = a * x + b * y + c, d * x + e * y + f
    inside = (sx >= 0.1) & (sx <= resized.shape[1] - 1.1) & (sy >= 0.1) & (sy <= resized.shape[0] - 1.1)
    assert np.all(mask[inside] == 1)


def test_weights_turn_with_the_template_and_a_binary_mask_stays_binary():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (20, 20, 1), dtype=np.uint8)
    weights = rng.random((20, 20)).astype(np.float32)
    _, turned = make_variant(image, weights, 1.0, 30.0)
    assert turned.dtype == np.float32 and 0.0 < turned[turned > 0].min() and turned.max() <= 1.0
    assert len(np.unique(turned)) > 10  # interpolated weights, not 0/1
    binary = (weights > 0.5).astype(np.uint8)
    _, turned = make_variant(image, binary, 1.0, 30.0)
    assert turned.dtype == np.uint8 and set(np.unique(turned)) <= {0, 1}


def test_pose_search_draws_through_the_same_rotation():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (21, 33, 1), dtype=np.uint8)
    template = PoseTemplate(image, None, 1)
    for angle in (0.0, 25.0, -110.0):
        (a, b, c, d, e, f, side_y, side_x) = template.placement_row(0, angle, 1.1)
        assert (a, b, c, d, e, f) == turn_map((16.0, 10.0), (side_x, side_y), angle, 1.1)
        drawn, mask = template.variant(0, angle, 1.1)
        assert np.array_equal(drawn, draw(template.images[0], (a, b, c, d, e, f), (side_x, side_y)))
        _counted_pixels_blend_only_the_template(template.images[0], mask, (a, b, c, d, e, f), (side_x, side_y))


def test_a_turned_variant_scores_its_place_in_a_turned_photograph():
    """A crop of a real photograph, found where the photograph itself is turned: the rim the template
    only partly covers, counted, blended with black and cost the true place most of its score (these
    plain crops of scikit-image's rocket scored 0.29-0.81 at six of the nine; now 0.85 and more: the
    two under 0.95 sit half a pixel off the photograph's own samples)."""
    photo = cv2.cvtColor(skimage.data.rocket(), cv2.COLOR_RGB2GRAY)
    rng = np.random.default_rng(5)
    scores = []
    for side in (24, 32, 48):
        for angle in (-30.0, 20.0, 45.0):
            cy, cx = rng.integers(100, photo.shape[0] - 100), rng.integers(100, photo.shape[1] - 100)
            top, left = cy - side // 2, cx - side // 2
            crop = photo[top:top + side, left:left + side]
            centre = (left + (side - 1) / 2, top + (side - 1) / 2)
            scene = cv2.warpAffine(photo, cv2.getRotationMatrix2D(centre, angle, 1.0), photo.shape[::-1])
            variant, mask = make_variant(crop[:, :, None], None, 1.0, angle)
            scores_map = Matcher([variant], masks=[mask], method="ccoeff_normed")(scene)[0]
            h, w = variant.shape[:2]
            y0, x0 = math.floor(centre[1] - (h - 1) / 2), math.floor(centre[0] - (w - 1) / 2)
            scores.append(float(np.nanmax(scores_map[y0:y0 + 2, x0:x0 + 2])))
    assert min(scores) > 0.8 and sorted(scores)[2] > 0.99, scores
