"""Boxes, axis-aligned or turned: their overlap and non-maximum suppression, one of each for the whole project,
and the sizes of a template resized and turned as the bank's variants are (which the client checks against a
video's frames before it sends any).

A box is ``(cx, cy, width, height, angle)``: its centre, its sides, and its
turn in degrees, counter-clockwise as displayed (the engine's ``Pose``
convention; 0 for an axis-aligned box). Pose search drops poses that overlap
a better one, the service merges a template's variants, the client's
tracker follows boxes from frame to frame: all through these two functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import cv2

Box = tuple[float, float, float, float, float]
T = TypeVar("T")


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 where they do not meet).

    Axis-aligned pairs (turns of whole quarter turns) by their extents; others
    by the intersection of the two rotated rectangles (OpenCV's).
    """
    if a[4] % 90.0 == 0.0 and b[4] % 90.0 == 0.0:
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = _extent(a), _extent(b)
        width, height = min(ax1, bx1) - max(ax0, bx0), min(ay1, by1) - max(ay0, by0)
        if width <= 0.0 or height <= 0.0:
            return 0.0
        inter = width * height
    else:
        # OpenCV's RotatedRect turns clockwise in image coordinates: the displayed angle negated.
        kind, points = cv2.rotatedRectangleIntersection(((a[0], a[1]), (a[2], a[3]), -a[4]),
                                                        ((b[0], b[1]), (b[2], b[3]), -b[4]))
        if kind == cv2.INTERSECT_NONE or points is None:
            return 0.0
        inter = float(cv2.contourArea(cv2.convexHull(points)))
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0.0 else 0.0


def _extent(box: Box) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a box turned by whole quarter turns."""
    cx, cy, width, height, angle = box
    if angle % 180.0 != 0.0:  # a quarter turn: the sides swap
        width, height = height, width
    return cx - width / 2.0, cy - height / 2.0, cx + width / 2.0, cy + height / 2.0


def suppress(items: Sequence[T], score: Callable[[T], float], same: Callable[[T, T], bool], *,
             limit: int | None = None, lower_is_better: bool = False) -> list[T]:
    """Non-maximum suppression: ``items`` best first, each dropped where it is ``same`` as one kept.

    Parameters
    ----------
    items : sequence
        The candidates.
    score : callable
        An item's score.
    same : callable
        Whether two items are one thing (boxes overlapping by more than a
        limit: ``iou(box(a), box(b)) > limit``; centres within a distance).
    limit : int, optional
        At most this many kept.
    lower_is_better : bool
        Lower scores first (sqdiff).

    Returns
    -------
    list
        The items kept, best first.
    """
    kept: list[T] = []
    for item in sorted(items, key=score, reverse=not lower_is_better):
        if limit is not None and len(kept) >= limit:
            break
        if not any(same(item, other) for other in kept):
            kept.append(item)
    return kept


def resized_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(width, height) of a template of ``height`` x ``width`` resized by ``scale`` (before any rotation)."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def turned_canvas(width: int, height: int, angle: float) -> tuple[int, int]:
    """(width, height) of the canvas that holds a ``width`` x ``height`` image turned by ``angle`` degrees."""
    radians = math.radians(angle)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    return int(math.ceil(width * cos + height * sin - 1e-6)), int(math.ceil(width * sin + height * cos - 1e-6))
