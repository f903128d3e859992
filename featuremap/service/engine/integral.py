"""Integral images (summed-area tables) in float64.

With them every window sum and squared sum costs four lookups whatever the
template size, which is what keeps normalisation O(1) per position.
"""

import numpy as np
from numba import njit, prange

from .runtime import JIT


_BLOCK = 512  # columns per task of the vertical pass


@njit(**JIT)
def _add_rows(here, above):
    for x in range(here.shape[0]):
        here[x] += above[x]


@njit(**JIT)
def _running_row(planes, y, sums, sq_row, squares=True):
    """Row y's running sums: ``sums[c, x + 1]`` of plane c, ``sq_row[x + 1]`` of squares over every plane.

    Every entry from index 1 on is written (the first plane's squares set,
    the others' added), so reused tables need only their first column zeroed.
    """
    for c in range(planes.shape[0]):
        acc = 0.0
        sq = 0.0
        row = planes[c, y]
        sum_row = sums[c]
        for x in range(planes.shape[2]):
            v = np.float64(row[x])
            acc += v
            sq += v * v
            sum_row[x + 1] = acc
            if not squares:
                continue
            if c == 0:
                sq_row[x + 1] = sq
            else:
                sq_row[x + 1] += sq


@njit(parallel=True, **JIT)
def _integrals(planes, sums, sqsum, squares):
    n_planes, height, width = planes.shape
    # Pass 1: running sums along each row; rows are independent.
    for y in prange(height):
        _running_row(planes, y, sums[:, y + 1], sqsum[y + 1 if squares else 0], squares)
    # Pass 2: add each row to the one below, per block of columns (blocks are
    # independent; contiguous views so the adds vectorise).
    n_blocks = (width + _BLOCK) // _BLOCK
    for task in prange(n_blocks * (n_planes + (1 if squares else 0))):
        c = task // n_blocks
        x0 = (task % n_blocks) * _BLOCK
        x1 = min(x0 + _BLOCK, width + 1)
        for y in range(1, height + 1):
            if c == n_planes:
                _add_rows(sqsum[y, x0:x1], sqsum[y - 1, x0:x1])
            else:
                _add_rows(sums[c, y, x0:x1], sums[c, y - 1, x0:x1])


def integral_images(planes: np.ndarray, scratch=None, name: str = "integral",
                    squares: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-plane sums and all-plane squared sums of ``planes`` (P, H, W).

    ``scratch`` (a Matcher's :class:`~.scratch.Scratch`), when given, lends
    the tables, under ``name``: reused from frame to frame, not fresh pages
    each time. Without ``squares`` the squared sums are left out (an empty
    table comes back).

    Returns
    -------
    sums : float64 array, (P, H+1, W+1)
        ``sums[c, y, x]`` is the sum of plane c over rows < y and columns < x.
    sqsum : float64 array, (H+1, W+1)
        The same for squares, summed over every plane.
    """
    n_planes, height, width = planes.shape
    square_shape = (height + 1, width + 1) if squares else (1, 1)
    if scratch is None:
        sums = np.zeros((n_planes, height + 1, width + 1))
        sqsum = np.zeros(square_shape)
    else:  # every entry is written but the first row and column
        sums = scratch.get(f"{name} sums", (n_planes, height + 1, width + 1))
        sqsum = scratch.get(f"{name} squares", square_shape)
        sums[:, 0, :] = 0.0
        sums[:, :, 0] = 0.0
        sqsum[0, :] = 0.0
        sqsum[:, 0] = 0.0
    _integrals(planes, sums, sqsum, squares)
    return sums, sqsum


def channel_integrals(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-plane sums and per-plane squared sums (ssim needs each channel's variance)."""
    tables = [integral_images(planes[c:c + 1]) for c in range(planes.shape[0])]
    return np.concatenate([t[0] for t in tables]), np.stack([t[1] for t in tables])


@njit(parallel=True, **JIT)
def _prefix(planes, prefix, sqprefix):
    for y in prange(planes.shape[1]):
        _running_row(planes, y, prefix[:, y], sqprefix[y], True)


def row_prefix(planes: np.ndarray, scratch=None) -> tuple[np.ndarray, np.ndarray]:
    """Running sums along each row of ``planes`` (P, H, W), in float64 (masked statistics, see masked.py).

    ``scratch`` as for :func:`integral_images`.

    Returns
    -------
    prefix : float64 array, (P, H, W+1)
        ``prefix[c, y, x]`` is the sum of plane c's row y over columns < x.
    sqprefix : float64 array, (H, W+1)
        The same for squares, summed over every plane.
    """
    n_planes, height, width = planes.shape
    if scratch is None:
        prefix = np.zeros((n_planes, height, width + 1))
        sqprefix = np.zeros((height, width + 1))
    else:  # every entry is written but the first column
        prefix = scratch.get("row sums", (n_planes, height, width + 1))
        sqprefix = scratch.get("row squares", (height, width + 1))
        prefix[:, :, 0] = 0.0
        sqprefix[:, 0] = 0.0
    _prefix(planes, prefix, sqprefix)
    return prefix, sqprefix
