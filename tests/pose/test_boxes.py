"""One overlap (IoU) for axis-aligned and turned boxes, and one non-maximum suppression."""

import math

import pytest

from featuremap.boxes import iou, suppress


def test_axis_aligned_boxes_overlap_by_their_extents():
    assert iou((5, 5, 10, 10, 0), (5, 5, 10, 10, 0)) == 1.0
    assert iou((5, 5, 10, 10, 0), (10, 5, 10, 10, 0)) == 50 / 150
    assert iou((5, 5, 10, 10, 0), (30, 30, 5, 5, 0)) == 0.0
    # A quarter turn swaps the sides: a 20x10 box turned 90 degrees is 10 wide and 20 high.
    assert iou((0, 0, 20, 10, 90), (0, 0, 10, 20, 0)) == 1.0
    assert iou((0, 0, 20, 10, -270), (0, 0, 10, 20, 180)) == 1.0  # three quarter turns back; a half turn


@pytest.mark.parametrize("a, b", [((0, 0, 30, 10, 0), (4, 2, 30, 10, 0)), ((0, 0, 30, 10, 90), (3, 1, 12, 28, 0))])
def test_the_turned_path_agrees_with_the_extents_where_both_apply(a, b):
    nudged = (*a[:4], a[4] + 1e-9)  # not a whole quarter turn: the rotated rectangles' intersection
    assert iou(nudged, b) == pytest.approx(iou(a, b), abs=1e-6)


def test_turned_boxes():
    assert iou((0, 0, 40, 10, 37), (0, 0, 40, 10, 37)) == pytest.approx(1.0)
    assert iou((0, 0, 40, 10, 37), (0, 0, 40, 10, 37 + 180)) == pytest.approx(1.0)  # a half turn is the same box
    crossed = iou((0, 0, 40, 10, 45), (0, 0, 40, 10, -45))  # a cross: the middle square of 10x10 in common
    assert crossed == pytest.approx(100 / (800 - 100), rel=1e-3)
    assert iou((0, 0, 40, 10, 30), (100, 0, 40, 10, 30)) == 0.0
    assert iou((0, 0, 40, 10, 30), (5, 3, 40, 10, 70)) == pytest.approx(iou((5, 3, 40, 10, 70), (0, 0, 40, 10, 30)))


def test_suppress_keeps_the_best_of_what_is_one_thing():
    items = [("a", 0.9, 0), ("b", 0.95, 2), ("c", 0.5, 50), ("d", 0.8, 51), ("e", 0.7, 100)]

    def same(p, q):
        return abs(p[2] - q[2]) < 10

    assert [i[0] for i in suppress(items, lambda i: i[1], same)] == ["b", "d", "e"]
    assert [i[0] for i in suppress(items, lambda i: i[1], same, limit=2)] == ["b", "d"]
    assert [i[0] for i in suppress(items, lambda i: i[1], same, lower_is_better=True)] == ["c", "e", "a"]
    assert suppress([], lambda i: 0.0, same) == []
    assert math.isclose(suppress(items, lambda i: i[1], lambda p, q: False)[0][1], 0.95)
