"""Track ids: kept while boxes overlap, new for new objects, ended after frames unseen."""

from featuremap.client import Peak, Tracker
from featuremap.client.tracking import iou


def box(template, x, y, score=0.9, size=20):
    return Peak(f"templates/{template}", x, y, size, size, score)


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == 50 / 150
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_tracks_follow_overlapping_boxes_and_end_after_frames_unseen():
    tracker = Tracker()
    first = tracker.update([box("a", 0, 0), box("b", 100, 100)])
    assert [d.track for d in first] == [1, 2]
    # a moves 4 px (IoU 0.67): same track; b jumps far: a new track.
    second = tracker.update([box("a", 4, 0), box("b", 200, 0)])
    assert [d.track for d in second] == [1, 3]
    # Two detections of a near the track: the stronger keeps it, the other gets a new one.
    third = tracker.update([box("a", 30, 30, 0.5), box("a", 6, 0, 0.6), box("a", 5, 1, 0.95)])
    assert [d.track for d in third] == [5, 4, 1]
    for _ in range(5):  # unseen for 5 frames: still open
        tracker.update([])
    assert [d.track for d in tracker.update([box("a", 5, 1)])] == [1]
    for _ in range(6):  # unseen for 6: ended
        tracker.update([])
    assert [d.track for d in tracker.update([box("a", 5, 1)])] == [6]


def test_templates_have_tracks_of_their_own_and_lower_can_be_better():
    tracker = Tracker()
    assert [d.track for d in tracker.update([box("a", 0, 0), box("b", 0, 0)])] == [1, 2]
    ordered = tracker.update([box("a", 1, 0, 0.9), box("a", 0, 1, 0.1)], lower_is_better=True)
    assert [d.track for d in ordered] == [3, 1]  # sqdiff: 0.1 is the stronger detection
