"""Pose search's shared parts: the result (:class:`Pose`), a candidate on its way down, a frame's
pyramid, and the small rules every stage uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from featuremap import boxes

from ..matcher import Cancelled
from .template import _wrap

if TYPE_CHECKING:
    from .grid import _TopGrid


_METHOD = {"ccoeff_normed": 0, "ccorr_normed": 1, "sqdiff_normed": 2}

@dataclass(frozen=True)
class Pose:
    """One found pose of a template.

    Attributes
    ----------
    cx, cy : float
        The template's centre in frame pixels (sub-pixel).
    angle : float
        Degrees, counter-clockwise as displayed, in [-180, 180).
    scale : float
        The template's scale.
    score : float
        Similarity at the pose (higher is better).
    width, height : float
        The scaled template's sides (the rotated box).
    visible : float
        The share of the template's area inside the frame (1 unless the part
        is clipped at the frame's edge; its score is its visible part's).
    ambiguity : float
        How close the pose's 180-degree twin came: its score over this
        pose's (0 where it was not measured: a search over less than the
        full circle). Near 1 the part is nearly symmetric under a half turn.
    """

    cx: float
    cy: float
    angle: float
    scale: float
    score: float
    width: float
    height: float
    visible: float = 1.0
    ambiguity: float = 0.0

@dataclass
class _Candidate:
    template: int
    cx: float  # at the current level, pixels
    cy: float
    angle: float
    scale: float
    score: float

@dataclass
class _Frame:
    """One search's frame: its pyramid, and the rules every score on it follows."""

    levels: list[np.ndarray]
    min_visible: float
    cancelled: Callable[[], bool]
    top: _TopGrid

def _never() -> bool:
    return False

def _check(cancelled: Callable[[], bool]) -> None:
    """Stop the search with :class:`Cancelled` once ``cancelled()`` says so."""
    if cancelled():
        raise Cancelled("the pose search was cancelled")

def _best_apart(items: list, same: Callable[[Any, Any], bool]) -> list:
    """``items`` (each with a ``score``) best first, each dropped where it is ``same`` as one kept."""
    return boxes.suppress(items, lambda item: item.score, same)

def _angle_gap(a: float, b: float) -> float:
    """Degrees between two angles, the short way round."""
    return abs(_wrap(a - b))

def _visible_share(pose: Pose, width: int, height: int) -> float:
    """The share of the pose's rotated box inside a frame of ``width`` x ``height`` pixels."""
    area = pose.width * pose.height
    if area <= 0.0:
        return 0.0
    box = cv2.boxPoints(((pose.cx, pose.cy), (pose.width, pose.height), -pose.angle))
    if (box >= -0.5).all() and (box[:, 0] <= width - 0.5).all() and (box[:, 1] <= height - 0.5).all():
        return 1.0  # whole: exactly (OpenCV's float32 intersection put a whole part at 0.9999998)
    edges = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]], np.float32)
    inside, _ = cv2.intersectConvexConvex(box.astype(np.float32), edges)
    return float(min(max(inside / area, 0.0), 1.0))

def _box(pose: Pose) -> boxes.Box:
    """A pose's rotated box."""
    return float(pose.cx), float(pose.cy), float(pose.width), float(pose.height), float(pose.angle)
