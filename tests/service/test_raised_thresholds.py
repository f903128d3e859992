"""How the frame path raises a config's threshold template by template (PeakOptions.template_thresholds)."""

import numpy as np
import pytest

from featuremap.service.pipeline.plans import MatchOptions
from featuremap.service.store.templates import StoredTemplate

VGA, LARGE = 640 * 480, 4000 * 3000


def template(texture_threshold: float) -> StoredTemplate:
    return StoredTemplate(id="t", image=np.zeros((8, 8, 1), np.uint8), mask=None, texture_threshold=texture_threshold)


@pytest.mark.parametrize(
    "options,texture,windows,expected",
    [
        (MatchOptions(threshold=0.7, template_thresholds=True), 0.93, VGA, 0.93),  # a plain template: raised
        (MatchOptions(threshold=0.95, template_thresholds=True), 0.93, VGA, 0.95),  # never lowered
        (MatchOptions(threshold=0.7, template_thresholds=True), 0.93, LARGE, 0.9549),  # stricter in 12 MP
        (MatchOptions(threshold=0.5, template_thresholds=True), 0.7, LARGE, 0.5),  # textured: as the config says
        (MatchOptions(threshold=0.7, template_thresholds=True), 0.0, VGA, 0.7),  # stored before calibration
        (MatchOptions(threshold=0.7), 0.93, VGA, 0.7),  # not asked for: a threshold the caller gave
        (MatchOptions(threshold=None, template_thresholds=True), 0.93, VGA, None),  # no threshold at all
        (MatchOptions(method="ssim", threshold=0.7, template_thresholds=True), 0.93, VGA, 0.7),  # not calibrated
        (MatchOptions(method="sqdiff_normed", threshold=0.2, template_thresholds=True), 0.93, VGA, 0.2),
    ],
)
def test_raised_threshold(options, texture, windows, expected):
    raised = options.raised_threshold(template(texture), windows)
    assert raised == (None if expected is None else pytest.approx(expected, abs=1e-4))
