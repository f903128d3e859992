"""Peaks of a score map: top-k with non-maximum suppression and sub-pixel refinement."""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from . import options


class Peak(NamedTuple):
    """A peak in map coordinates (floats when refined to sub-pixel)."""

    x: float
    y: float
    score: float


def _refine(line: np.ndarray, i: int) -> float:
    """Offset of the vertex of the parabola through line[i-1], line[i], line[i+1]."""
    if i <= 0 or i >= len(line) - 1:
        return 0.0
    left, mid, right = float(line[i - 1]), float(line[i]), float(line[i + 1])
    curvature = left - 2.0 * mid + right
    if curvature == 0.0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def find_peaks(
    score_map: np.ndarray,
    *,
    method: str,
    top_k: int = 1,
    threshold: float | None = None,
    min_distance: int | None = None,
    subpixel: bool = False,
) -> list[Peak]:
    """The best positions of a score map, best first.

    Parameters
    ----------
    score_map : numpy.ndarray
        A 2-D map from :class:`Matcher`.
    method : str
        The method that made the map: the sqdiff pair's best is the minimum.
    top_k : int
        At most this many peaks.
    threshold : float, optional
        Keep peaks scoring at least this (at most, for the sqdiff pair).
    min_distance : int, optional
        Peaks are at least this many pixels apart along x or y (Chebyshev
        distance); a weaker peak within it of a stronger one is suppressed.
        Default 1: every distinct position may be a peak.
    subpixel : bool
        Refine x and y with a parabola through the peak and its neighbours.

    Returns
    -------
    list of Peak
    """
    method = options.check_choice("method", method, options.METHODS)
    if not isinstance(score_map, np.ndarray) or score_map.ndim != 2 or score_map.size == 0:
        raise ValueError("score_map must be a non-empty 2-D array (one map from Matcher)")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    distance = 1 if min_distance is None else min_distance
    if isinstance(distance, bool) or not isinstance(distance, (int, np.integer)) or distance < 1:
        raise ValueError(f"min_distance must be an integer >= 1, got {min_distance!r}")
    values = np.asarray(score_map, dtype=np.float32)
    lower = method in options.LOWER_IS_BETTER
    goodness = -values if lower else values
    # Candidates are the local maxima of their (2d-1)-square neighbourhood;
    # greedy suppression among them then enforces the distance exactly.
    if distance > 1:
        size = 2 * distance - 1
        local_max = cv2.dilate(goodness, np.ones((size, size), np.uint8), borderType=cv2.BORDER_REPLICATE)
        candidates = goodness >= local_max
    else:
        candidates = np.ones(goodness.shape, bool)
    if threshold is not None:
        limit = -float(threshold) if lower else float(threshold)
        candidates &= goodness >= limit
    ys, xs = np.nonzero(candidates)
    order = np.argsort(-goodness[ys, xs], kind="stable")
    if distance == 1:
        order = order[:top_k]
    kept: list[tuple[int, int]] = []
    for idx in order:
        y, x = int(ys[idx]), int(xs[idx])
        if all(max(abs(y - ky), abs(x - kx)) >= distance for ky, kx in kept):
            kept.append((y, x))
            if len(kept) == top_k:
                break
    peaks = []
    for y, x in kept:
        fx, fy = float(x), float(y)
        if subpixel:
            fx += _refine(values[y], x)
            fy += _refine(values[:, x], y)
        peaks.append(Peak(x=fx if subpixel else x, y=fy if subpixel else y, score=float(values[y, x])))
    return peaks
