"""Turning a template: one rotation and scaling about its centre onto a canvas, and the pixels it covers.

The bank's discrete variants (:mod:`featuremap.service.store.variants`) and
pose search's (:mod:`featuremap.service.engine.pose.template`) are both drawn
here; they differ only in their canvas (the turned box's hull for a variant
whose map goes on the wire, an odd square or hull for pose search so that the
canvas's centre is a pixel's) and in what they turn from (the resized
template, a pyramid level).

Angles are counter-clockwise as displayed (y grows downwards), as
``cv2.getRotationMatrix2D`` takes them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: A canvas pixel counts in a turned template's mask when the template covers all of it. A pixel the
#: template's rim only partly covers is interpolated against the canvas's zero border: counted, it
#: would darken the rim and cost the true position's score.
WHOLE = 0.999


def turn_map(centre: tuple[float, float], canvas: tuple[int, int], angle: float, scale: float = 1.0,
             shift: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float, float, float, float, float]:
    """The map from a canvas's pixels to the source's (the six numbers of a 2x3 matrix, row-major, as
    ``cv2.warpAffine`` takes it with ``WARP_INVERSE_MAP``).

    Parameters
    ----------
    centre : (float, float)
        The source point (x, y) turned about: it lands on the canvas's centre.
    canvas : (int, int)
        The canvas's (width, height).
    angle : float
        Degrees, counter-clockwise as displayed.
    scale : float
        The source's pixels grow by this much on the canvas.
    shift : (float, float)
        ``centre`` lands this far (x, y) from the canvas's centre instead.
    """
    radians = math.radians(angle)
    cos, sin = math.cos(radians), math.sin(radians)
    # Canvas point p to source point q = centre + R(-angle) (p - canvas centre - shift) / scale, with
    # R(-angle) the inverse of getRotationMatrix2D's counter-clockwise rotation.
    a, b = cos / scale, -sin / scale
    c, d = sin / scale, cos / scale
    at_x, at_y = (canvas[0] - 1) / 2.0 + shift[0], (canvas[1] - 1) / 2.0 + shift[1]
    return a, b, centre[0] - a * at_x - b * at_y, c, d, centre[1] - c * at_x - d * at_y


def draw(source: np.ndarray, matrix: tuple[float, ...] | np.ndarray, canvas: tuple[int, int],
         interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``source`` (HxW or HxWxC) drawn through ``matrix`` (see :func:`turn_map`) on a canvas of
    (width, height), zero where it does not reach; HxWxC when ``source`` has channels, else HxW."""
    inverse = np.asarray(matrix, np.float64).reshape(2, 3)
    drawn = cv2.warpAffine(source, inverse, canvas, flags=interpolation | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return drawn.reshape(canvas[1], canvas[0], -1) if source.ndim == 3 else drawn


def covered(shape: tuple[int, int], matrix: tuple[float, ...] | np.ndarray, canvas: tuple[int, int],
            mask: np.ndarray | None = None, weights: bool = False) -> np.ndarray:
    """Which canvas pixels the turned template counts: float32 (height, width).

    A pixel counts where the template of ``shape`` (height, width) covers it
    whole (:data:`WHOLE`) and, with ``mask``, where the turned mask holds: at
    0.5 or more (1.0 then), or with ``weights`` its interpolated weight.
    """
    whole = draw(np.ones(shape, np.float32), matrix, canvas) >= WHOLE
    if mask is None:
        return whole.astype(np.float32)
    turned = draw(np.asarray(mask, np.float32), matrix, canvas)
    if weights:
        return np.where(whole, turned, 0.0).astype(np.float32)
    return (whole & (turned >= 0.5)).astype(np.float32)
