"""Masked templates: window statistics from the mask's runs, shared by the templates with one mask."""

import numpy as np
import pytest

from featuremap.service.engine import Matcher
from featuremap.service.engine.masked import mask_runs
from featuremap.service.store.variants import make_variant

from bounds import assert_within, map_bound
from naive import naive_match


def rebuild(runs, shape):
    mask = np.zeros(shape)
    for row, start, end, weight in zip(runs.rows, runs.starts, runs.ends, runs.weights):
        mask[row, start:end] = weight
    return mask


@pytest.mark.parametrize("kind", ["binary", "weights", "empty-rows"])
def test_runs_rebuild_the_mask_exactly(kind):
    rng = np.random.default_rng(3)
    if kind == "binary":
        mask = (rng.random((9, 13)) > 0.4).astype(np.float32)
    elif kind == "weights":
        mask = rng.choice([0.0, 0.25, 1.0, 3.5], size=(9, 13)).astype(np.float32)
    else:
        mask = np.zeros((9, 13), np.float32)
        mask[3, 2:7] = 1.0
    runs = mask_runs(mask)
    assert np.array_equal(rebuild(runs, mask.shape), mask)
    assert runs.binary == (kind != "weights")
    assert runs.msum == pytest.approx(mask.sum()) and runs.msum2 == pytest.approx((mask.astype(float) ** 2).sum())
    # Runs are maximal: neighbours in a row never share a weight.
    for r in range(len(runs.rows) - 1):
        if runs.rows[r] == runs.rows[r + 1] and runs.ends[r] == runs.starts[r + 1]:
            assert runs.weights[r] != runs.weights[r + 1]


def test_a_rotated_template_has_one_run_per_row():
    template = np.random.default_rng(4).integers(0, 256, (24, 24, 1), dtype=np.uint8)
    _, mask = make_variant(template, None, 1.25, 30)
    runs = mask_runs((mask != 0).astype(np.float32))
    assert len(runs.rows) == np.count_nonzero(mask.any(axis=1))


@pytest.mark.parametrize("method", ["sqdiff", "sqdiff_normed", "ccorr_normed", "ccoeff", "ccoeff_normed"])
def test_templates_sharing_masks_score_as_each_alone(method):
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)
    masks = [(rng.random((11, 11)) > 0.3).astype(np.uint8), rng.random((11, 11)).astype(np.float32)]
    templates = [rng.integers(0, 256, (11, 11, 3), dtype=np.uint8) for _ in range(6)]
    bank = Matcher(templates, masks=[masks[i % 2] for i in range(6)], method=method, stride=2,
                   padding="same", border="reflect")
    (group,) = bank.prepared.groups
    assert len(group.mask_sets) == 2  # one set of statistics per distinct mask
    for i, (template, result) in enumerate(zip(templates, bank(frame))):
        alone = Matcher([template], masks=[masks[i % 2]], method=method, stride=2, padding="same",
                        border="reflect")(frame)[0]
        # Both within the bound of the float64 reference: in the bank (sqdiff takes off the bank's
        # mean template value) and alone (its own).
        reference = naive_match(frame.astype(np.float64), template.astype(np.float64), method=method,
                                mask=masks[i % 2], padding="same", border="reflect", stride=2)
        for scores, bank_of in ((result, templates), (alone, [template])):
            bound = map_bound(frame, template, method=method, algorithm="auto", mask=masks[i % 2], bank=bank_of,
                              padding="same", border="reflect", stride=2)
            assert_within(scores, reference, bound, method, "in the bank" if bank_of is templates else "alone")
