"""Scenes with a known pose: a template from one photograph warped (bilinear) onto another."""

from __future__ import annotations

import math

import cv2
import numpy as np



def photographs() -> tuple[np.ndarray, np.ndarray]:
    """(astronaut, coffee) gray uint8, from scikit-image's data."""
    import skimage.data

    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    coffee = cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2GRAY)
    return astronaut, coffee


def place(background: np.ndarray, template: np.ndarray, angle: float, scale: float, cx: float,
          cy: float) -> np.ndarray:
    """``background`` (float32) with ``template`` drawn rotated by ``angle`` (degrees, counter-clockwise
    as displayed) and scaled by ``scale`` about its centre, that centre at (cx, cy)."""
    h, w = template.shape[:2]
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += np.array([cx, cy]) - centre
    size = (background.shape[1], background.shape[0])
    warped = cv2.warpAffine(template.astype(np.float32), matrix, size, flags=cv2.INTER_LINEAR)
    cover = cv2.warpAffine(np.ones(template.shape[:2], np.float32), matrix, size, flags=cv2.INTER_LINEAR)
    if warped.ndim == 3:
        cover = cover[:, :, None]
    return (background.astype(np.float32) * (1.0 - cover) + warped).astype(np.float32)


def angle_error(found: float, truth: float) -> float:
    return abs((found - truth + 180.0) % 360.0 - 180.0)


def position_error(pose, cx: float, cy: float) -> float:
    return math.hypot(pose.cx - cx, pose.cy - cy)
