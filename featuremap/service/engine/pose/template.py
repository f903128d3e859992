"""A template for pose search: its pyramid, and its rotated, scaled variants drawn on odd canvases."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..turn import covered, draw, turn_map


def _wrap(angle: float) -> float:
    """The angle in [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


def pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """[image, pyrDown(image), ...] as float32 (H, W, C), ``levels`` + 1 of them."""
    out = [np.ascontiguousarray(image, np.float32)]
    for _ in range(levels):
        down = cv2.pyrDown(out[-1])
        out.append(down.reshape(down.shape[0], down.shape[1], -1))
    return out


def odd_side(reach: float) -> int:
    """The odd canvas side (at least 3) that holds ``reach`` pixels either side of a centre pixel."""
    return 2 * max(1, math.ceil(reach - 0.5)) + 1


def canvas_sides(height: int, width: int, level: int, angle: float, scale: float, disc: bool) -> tuple[int, int]:
    """The (height, width) of the canvas a template of ``height`` x ``width`` is drawn on at ``level``,
    turned by ``angle`` and scaled by ``scale``: odd sides, so that the canvas centre is a pixel centre
    and map positions are template centres; the inscribed disc's square with ``disc``, else the
    turned box's hull."""
    half_w = scale * width / 2.0 ** level / 2.0
    half_h = scale * height / 2.0 ** level / 2.0
    if disc:
        side = odd_side(min(half_w, half_h))
        return side, side
    radians = math.radians(angle)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    return odd_side(sin * half_w + cos * half_h), odd_side(cos * half_w + sin * half_h)


class PoseTemplate:
    """One template's pyramid and its variants."""

    def __init__(self, image: np.ndarray, mask: np.ndarray | None, levels: int) -> None:
        self.height, self.width = image.shape[:2]
        self.images = pyramid(image, levels)
        weights = np.ones(image.shape[:2], np.float32) if mask is None else (mask != 0).astype(np.float32)
        self.masked = mask is not None
        self.masks = [weights]
        for _ in range(levels):
            self.masks.append(cv2.pyrDown(self.masks[-1]))

    def side(self, level: int) -> float:
        """The template's larger side at ``level``, in that level's pixels."""
        return max(self.height, self.width) / 2.0 ** level

    def placement(self, level: int, angle: float, scale: float, disc: bool = False,
                  shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, tuple[int, int]]:
        """The map from a variant's canvas pixels to the template's at ``level`` (2x3, as warpAffine's
        WARP_INVERSE_MAP takes it), and the canvas's (height, width): see :meth:`variant`."""
        *matrix, side_y, side_x = self.placement_row(level, angle, scale, disc, shift)
        return np.array(matrix).reshape(2, 3), (int(side_y), int(side_x))

    def placement_row(self, level: int, angle: float, scale: float, disc: bool = False,
                      shift: tuple[float, float] = (0.0, 0.0)) -> tuple[float, ...]:
        """:meth:`placement` as one row of numbers: the map's six, then the canvas's height and width."""
        # The level's centre of the template, in its pixels (pyrDown keeps even samples).
        centre = ((self.width - 1) / 2.0 / 2.0 ** level, (self.height - 1) / 2.0 / 2.0 ** level)
        side_y, side_x = canvas_sides(self.height, self.width, level, angle, scale, disc)
        return *turn_map(centre, (side_x, side_y), angle, scale, shift), side_y, side_x

    def variant(self, level: int, angle: float, scale: float, disc: bool = False,
                shift: tuple[float, float] = (0.0, 0.0), paired: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The template at ``level`` rotated and scaled about its centre, on an odd canvas, and its 0/1 mask.

        ``disc``: only the disc inscribed in the template, the same mask at every
        angle (the top level's screening shares its window statistics so).
        ``shift``: the template's centre sits this far (pixels, under one) from the canvas's centre.
        ``paired``: the mask of an unmasked template made the same for ``angle``
        and ``angle`` + 180 (the rotated box is symmetric: a pixel counts where
        it does in both), so the top level's box screening computes the window
        statistics of half its angles.
        """
        source = self.images[level]
        radius = min(scale * self.width, scale * self.height) / 2.0 ** level / 2.0
        matrix, (side_y, side_x) = self.placement(level, angle, scale, disc, shift)
        canvas_x, canvas_y = (side_x - 1) / 2.0, (side_y - 1) / 2.0
        image = draw(source, matrix, (side_x, side_y))
        # Where the template covers the canvas pixel whole (and its own mask holds).
        keep = covered(source.shape[:2], matrix, (side_x, side_y), self.masks[level] if self.masked else None) > 0
        if paired and not self.masked and not disc:
            keep &= keep[::-1, ::-1]
            if not -90.0 <= angle < 90.0:  # the half turn's mask, made from the same angle as its twin's
                twin = self.variant(level, angle - math.copysign(180.0, angle), scale, paired=True)[1]
                if twin.shape == keep.shape:  # (a canvas side rounded the other way: keep its own)
                    keep = twin.astype(bool)
        if disc:
            # A pixel in from the rim, so that every angle covers the same disc
            # (one mask, one set of window statistics for all of them).
            y, x = np.mgrid[:side_y, :side_x]
            keep &= np.hypot(x - canvas_x, y - canvas_y) <= max(radius - 1.0, 1.0)
        return np.ascontiguousarray(image), keep.astype(np.float32)
