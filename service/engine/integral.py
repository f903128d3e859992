"""Integral images (summed-area tables) in float64.

With them every window sum and squared sum costs four lookups whatever the
template size, which is what keeps normalisation O(1) per position.
"""

import numpy as np
from numba import njit, prange

from .runtime import JIT


@njit(parallel=True, **JIT)
def _integrals(planes, sums, sqsum):
    n_planes, height, width = planes.shape
    # Pass 1: running sums along each row (rows are independent).
    for y in prange(height):
        sq_acc = np.zeros(width + 1)
        for c in range(n_planes):
            acc = 0.0
            sq = 0.0
            row = planes[c, y]
            srow = sums[c, y + 1]
            for x in range(width):
                v = np.float64(row[x])
                acc += v
                sq += v * v
                srow[x + 1] = acc
                sq_acc[x + 1] += sq
        qrow = sqsum[y + 1]
        for x in range(width + 1):
            qrow[x] = sq_acc[x]
    # Pass 2: accumulate down the columns, a vectorised add per row; the
    # column strips are independent.
    n_strips = (width + 1 + 255) // 256
    for s in prange(n_strips * (n_planes + 1)):
        c = s // n_strips
        x0 = (s % n_strips) * 256
        x1 = min(x0 + 256, width + 1)
        table = sqsum if c == n_planes else sums[c]
        for y in range(1, height + 1):
            above = table[y - 1]
            here = table[y]
            for x in range(x0, x1):
                here[x] += above[x]


def integral_images(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-plane sums and all-plane squared sums of ``planes`` (P, H, W).

    Returns
    -------
    sums : float64 array, (P, H+1, W+1)
        ``sums[c, y, x]`` is the sum of plane c over rows < y and columns < x.
    sqsum : float64 array, (H+1, W+1)
        The same for squares, summed over every plane.
    """
    n_planes, height, width = planes.shape
    sums = np.zeros((n_planes, height + 1, width + 1))
    sqsum = np.zeros((height + 1, width + 1))
    _integrals(planes, sums, sqsum)
    return sums, sqsum
