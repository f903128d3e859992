"""find_peaks: top-k, suppression, thresholds, direction and sub-pixel refinement."""

import numpy as np
import pytest

from featuremap.service.engine import Peak, find_peaks


def bumps(height=40, width=50):
    """A map with three separated peaks of known height, one with a shoulder."""
    score = np.zeros((height, width), np.float32)
    score[10, 10] = 0.9
    score[10, 11] = 0.85  # shoulder of the first peak
    score[30, 40] = 0.7
    score[5, 45] = 0.5
    return score


def test_top_k_is_ordered_best_first():
    peaks = find_peaks(bumps(), method="ccoeff_normed", top_k=3, min_distance=3)
    assert [(p.x, p.y) for p in peaks] == [(10, 10), (40, 30), (45, 5)]
    assert [p.score for p in peaks] == pytest.approx([0.9, 0.7, 0.5])
    assert isinstance(peaks[0], Peak)


def test_min_distance_suppresses_neighbours_only_within_it():
    without = find_peaks(bumps(), method="ccoeff_normed", top_k=2)
    assert [(p.x, p.y) for p in without] == [(10, 10), (11, 10)]
    with_nms = find_peaks(bumps(), method="ccoeff_normed", top_k=2, min_distance=2)
    assert [(p.x, p.y) for p in with_nms] == [(10, 10), (40, 30)]


def test_threshold_and_lower_is_better():
    assert len(find_peaks(bumps(), method="ccorr", top_k=5, min_distance=3, threshold=0.6)) == 2
    inverted = 1.0 - bumps()
    peaks = find_peaks(inverted, method="sqdiff_normed", top_k=2, min_distance=3, threshold=0.4)
    assert [(p.x, p.y) for p in peaks] == [(10, 10), (40, 30)]
    assert peaks[0].score == pytest.approx(0.1)


def test_subpixel_refinement_finds_the_vertex_of_a_paraboloid():
    y, x = np.mgrid[0:21, 0:21].astype(np.float64)
    score = (1.0 - 0.01 * ((x - 7.3) ** 2 + (y - 12.6) ** 2)).astype(np.float32)
    peak = find_peaks(score, method="ccoeff_normed", subpixel=True)[0]
    assert peak.x == pytest.approx(7.3, abs=1e-3)
    assert peak.y == pytest.approx(12.6, abs=1e-3)
    assert find_peaks(score, method="ccoeff_normed")[0][:2] == (7, 13)


def test_peak_on_the_edge_is_not_refined_outside_the_map():
    score = np.zeros((5, 5), np.float32)
    score[0, 4] = 1.0
    peak = find_peaks(score, method="ccorr", subpixel=True)[0]
    assert (peak.x, peak.y) == (4.0, 0.0)


@pytest.mark.parametrize("distance", [1, 3, 8])
def test_both_ways_of_greedy_suppression_agree(distance):
    from featuremap.service.engine.peaks import _greedy_by_argmax, _greedy_by_sorting

    rng = np.random.default_rng(distance)
    for _ in range(20):
        goodness = rng.random((30, 40)).astype(np.float32).round(2)  # rounding makes ties
        for limit in (None, 0.5):
            assert _greedy_by_argmax(goodness, 16, distance, limit) == _greedy_by_sorting(goodness, 16, distance, limit)
    # Many peaks go through the sorting way, few through argmax: same map, same first peaks.
    many = find_peaks(goodness, method="ccorr", top_k=40, min_distance=distance)
    few = find_peaks(goodness, method="ccorr", top_k=16, min_distance=distance)
    assert many[:16] == few
