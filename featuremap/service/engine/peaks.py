"""Peaks of a score map: top-k with non-maximum suppression and sub-pixel refinement."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import options


class Peak(NamedTuple):
    """A peak in map coordinates (floats when refined to sub-pixel)."""

    x: float
    y: float
    score: float


def vertex_offset(left: float, mid: float, right: float) -> float:
    """Offset of the vertex of the parabola through (-1, left), (0, mid), (1, right), within +-0.5."""
    curvature = left - 2.0 * mid + right
    if curvature == 0.0 or curvature != curvature:  # flat, or a neighbour missing (NaN)
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def _refine(line: np.ndarray, i: int) -> float:
    """Offset of the vertex of the parabola through line[i-1], line[i], line[i+1]."""
    if i <= 0 or i >= len(line) - 1:
        return 0.0
    return vertex_offset(float(line[i - 1]), float(line[i]), float(line[i + 1]))


_FEW = 16  # up to this many peaks, repeated argmax beats sorting the whole map


def _greedy_by_argmax(goodness: np.ndarray, top_k: int, distance: int, limit) -> list[tuple[int, int]]:
    work = goodness if top_k == 1 else goodness.copy()
    kept = []
    for _ in range(top_k):
        y, x = np.unravel_index(int(np.argmax(work)), work.shape)
        best = work[y, x]
        if best == -np.inf or (limit is not None and best < limit):
            break
        kept.append((int(y), int(x)))
        if len(kept) < top_k:
            work[max(0, y - distance + 1): y + distance, max(0, x - distance + 1): x + distance] = -np.inf
    return kept


def _greedy_by_sorting(goodness: np.ndarray, top_k: int, distance: int, limit) -> list[tuple[int, int]]:
    order = np.argsort(-goodness, axis=None, kind="stable")
    suppressed = np.zeros(goodness.shape, bool)
    width = goodness.shape[1]
    kept = []
    for index in order:
        y, x = divmod(int(index), width)
        if suppressed[y, x]:
            continue
        if limit is not None and goodness[y, x] < limit:
            break
        kept.append((y, x))
        if len(kept) == top_k:
            break
        suppressed[max(0, y - distance + 1): y + distance, max(0, x - distance + 1): x + distance] = True
    return kept


def check_peak_options(*, top_k: int = 1, threshold: float | None = None, min_distance: int | None = None) -> int:
    """Check :func:`find_peaks`'s options (raises OptionError); returns the minimum distance to use."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise options.OptionError(f"top_k must be an integer >= 1, got {top_k!r}")
    distance = 1 if min_distance is None else min_distance
    if isinstance(distance, bool) or not isinstance(distance, (int, np.integer)) or distance < 1:
        raise options.OptionError(f"min_distance must be an integer >= 1, got {min_distance!r}")
    if threshold is not None and not np.isfinite(threshold):
        raise options.OptionError(f"threshold must be a finite number, got {threshold!r}")
    return int(distance)


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
        raise options.OptionError("score_map must be a non-empty 2-D array (one map from Matcher)")
    distance = check_peak_options(top_k=top_k, threshold=threshold, min_distance=min_distance)
    values = np.asarray(score_map, dtype=np.float32)
    lower = method in options.LOWER_IS_BETTER
    goodness = -values if lower else values
    limit = None if threshold is None else (-float(threshold) if lower else float(threshold))
    # Greedy non-maximum suppression over every position: take the best,
    # suppress everything closer than ``distance``, repeat. Two ways to the
    # same answer (ties go to the first position in row-major order).
    if top_k <= _FEW:
        kept = _greedy_by_argmax(goodness, top_k, distance, limit)
    else:
        kept = _greedy_by_sorting(goodness, top_k, distance, limit)
    peaks = []
    for y, x in kept:
        fx, fy = float(x), float(y)
        if subpixel:
            fx += _refine(values[y], x)
            fy += _refine(values[:, x], y)
        peaks.append(Peak(x=fx if subpixel else x, y=fy if subpixel else y, score=float(values[y, x])))
    return peaks
