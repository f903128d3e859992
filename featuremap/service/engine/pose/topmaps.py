"""The top level's maps reduced: the best pose's score per position, and the maxima of blocks (places)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..runtime import JIT
from .scores import _PARALLEL_WORK


def keep_best(stack: np.ndarray, best: np.ndarray) -> None:
    """Where a map of ``stack`` (n, H, W) beats ``best`` (H, W), keep its score: the best pose's, per position.

    Large stacks by rows in parallel (on a 12 MP frame's grid of 32 poses the
    serial loop took a tenth of the search); small ones on the calling thread.
    """
    kernel = _keep_best if stack.size > _PARALLEL_WORK else _keep_best_serial
    kernel(stack, best)


@njit(parallel=True, **JIT)
def _keep_best(stack, best):
    for y in prange(stack.shape[1]):
        row = best[y]
        for i in range(stack.shape[0]):
            values = stack[i, y]
            for x in range(stack.shape[2]):
                row[x] = max(row[x], values[x])


@njit(**JIT)
def _keep_best_serial(stack, best):
    for i in range(stack.shape[0]):
        for y in range(stack.shape[1]):
            row = best[y]
            values = stack[i, y]
            for x in range(stack.shape[2]):
                row[x] = max(row[x], values[x])


@njit(parallel=True, **JIT)
def block_maxima(scores, side):
    """The maximum of each ``side`` x ``side`` block of ``scores`` (H, W) float32 (blocks at the ends cut short)."""
    height, width = scores.shape
    rows, cols = (height + side - 1) // side, (width + side - 1) // side
    out = np.full((rows, cols), -np.inf, np.float32)
    for r in prange(rows):
        for y in range(r * side, min(height, (r + 1) * side)):
            line = scores[y]
            for c in range(cols):
                best = out[r, c]
                for x in range(c * side, min(width, (c + 1) * side)):
                    if line[x] > best:
                        best = line[x]
                out[r, c] = best
    return out


def warm_maps() -> None:
    """Compile the reductions, serial and parallel."""
    block_maxima(np.zeros((3, 3), np.float32), 2)
    for reduce in (_keep_best, _keep_best_serial):
        reduce(np.zeros((1, 2, 2), np.float32), np.full((2, 2), -np.inf, np.float32))
