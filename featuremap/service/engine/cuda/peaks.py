"""Greedy top-k peaks with non-maximum suppression on the GPU: only peaks cross back unless maps are asked for."""

import math

from numba import cuda, float32, float64, int64

from .launch import PEAK_THREADS


@cuda.jit(device=True, inline="always")
def _free(peaks, n, m, round_, py, px, d):
    """Whether (py, px) is at least ``d`` from every peak of the earlier rounds (Chebyshev)."""
    for j in range(round_):
        if abs(py - int64(peaks[n, m, j, 1])) < d and abs(px - int64(peaks[n, m, j, 2])) < d:
            return False
    return True


@cuda.jit(device=True, inline="always")
def _best_free(maps, lower, peaks, n, m, round_, d, first, stop, tid):
    """This thread's best free position of map (n, m) among first + tid, first + tid + PEAK_THREADS, ... < stop.

    Returns its goodness (the value, negated for the sqdiff pair; -inf when
    none) and flat position (the map's size when none); ties go to the first.
    """
    width = maps.shape[3]
    top = float32(-math.inf)
    at = maps.shape[2] * width
    for i in range(first + tid, stop, PEAK_THREADS):
        py = i // width
        px = i - py * width
        if _free(peaks, n, m, round_, py, px, d):
            v = maps[n, m, py, px]
            g = -v if lower else v
            if g > top:
                top = g
                at = i
    return top, at


@cuda.jit(device=True, inline="always")
def _block_best(best, where, tid, top, at):
    """Leave in best[0], where[0] the block's best of its threads' (top, at) (ties: the first position)."""
    best[tid] = top
    where[tid] = at
    cuda.syncthreads()
    step = PEAK_THREADS // 2
    while step > 0:
        if tid < step:
            other, there = best[tid + step], where[tid + step]
            if other > best[tid] or (other == best[tid] and there < where[tid]):
                best[tid] = other
                where[tid] = there
        cuda.syncthreads()
        step //= 2


@cuda.jit(cache=True)
def partial_peaks(maps, lower, distances, peaks, counts, round_, partial, partial_at):
    """Round ``round_`` of the greedy peaks, first half: each block's best free position of its stretch of a map.

    Grid: (blocks per map, M, N). partial, partial_at (N, M, blocks): the
    block's best goodness (the value, negated for the sqdiff pair) and its
    position, -inf where it has none or the map's earlier round found none.
    """
    best = cuda.shared.array(PEAK_THREADS, float32)
    where = cuda.shared.array(PEAK_THREADS, int64)
    b, m, n = cuda.blockIdx.x, cuda.blockIdx.y, cuda.blockIdx.z
    tid = cuda.threadIdx.x
    size = maps.shape[2] * maps.shape[3]
    stretch = (size + cuda.gridDim.x - 1) // cuda.gridDim.x
    start = b * stretch
    top = float32(-math.inf)
    at = size
    if counts[n, m] == round_:  # else an earlier round found no peak: the map is done
        top, at = _best_free(maps, lower, peaks, n, m, round_, distances[m], start, min(size, start + stretch), tid)
    _block_best(best, where, tid, top, at)
    if tid == 0:
        partial[n, m, b] = best[0]
        partial_at[n, m, b] = where[0]


@cuda.jit(cache=True)
def pick_peaks(maps, limit, has_limit, peaks, counts, round_, partial, partial_at):
    """Round ``round_``, second half: the map's best of its blocks' bests becomes peak ``round_`` (grid: M, N).

    As :func:`top_peaks`: stops below ``limit``, or when no free position is
    left; counts[n, m] becomes round_ + 1 when a peak is taken.
    """
    best = cuda.shared.array(PEAK_THREADS, float32)
    where = cuda.shared.array(PEAK_THREADS, int64)
    m, n = cuda.blockIdx.x, cuda.blockIdx.y
    tid = cuda.threadIdx.x
    size = maps.shape[2] * maps.shape[3]
    top = float32(-math.inf)
    at = size
    for j in range(tid, partial.shape[2], PEAK_THREADS):
        g, i = partial[n, m, j], partial_at[n, m, j]
        if g > top or (g == top and i < at):
            top = g
            at = i
    _block_best(best, where, tid, top, at)
    if tid == 0 and counts[n, m] == round_:
        at = where[0]
        if at < size and not (has_limit and float64(best[0]) < limit):
            _record_peak(maps, peaks, n, m, round_, at)
            counts[n, m] = round_ + 1


@cuda.jit(device=True, inline="always")
def _record_peak(maps, peaks, n, m, round_, at):
    """Peak ``round_`` of map (n, m) at flat position ``at``: its value, y, x and four neighbours (NaN past the edge)."""
    height, width = maps.shape[2], maps.shape[3]
    py = at // width
    px = at - py * width
    row = peaks[n, m, round_]
    row[0] = maps[n, m, py, px]
    row[1] = py
    row[2] = px
    row[3] = maps[n, m, py, px - 1] if px > 0 else math.nan
    row[4] = maps[n, m, py, px + 1] if px < width - 1 else math.nan
    row[5] = maps[n, m, py - 1, px] if py > 0 else math.nan
    row[6] = maps[n, m, py + 1, px] if py < height - 1 else math.nan


@cuda.jit(cache=True)
def top_peaks(maps, lower, limit, has_limit, distances, peaks, counts):
    """Each map's best positions, greedy with suppression (peaks.find_peaks, on the device).

    One block per map (grid: M, N). Round i takes the best position (ties to
    the first in row-major order) among those not within ``distances[m]`` of
    an earlier pick, stopping below ``limit``. peaks (N, M, top_k, 7) float64:
    score, y, x, and the neighbours left, right, above, below (NaN at the
    map's edge) for the sub-pixel fit; counts (N, M) how many were found.
    """
    best = cuda.shared.array(PEAK_THREADS, float32)
    where = cuda.shared.array(PEAK_THREADS, int64)
    m = cuda.blockIdx.x
    n = cuda.blockIdx.y
    tid = cuda.threadIdx.x
    size = maps.shape[2] * maps.shape[3]
    d = distances[m]
    found = 0
    for round_ in range(peaks.shape[2]):
        top, at = _best_free(maps, lower, peaks, n, m, round_, d, 0, size, tid)
        _block_best(best, where, tid, top, at)
        top = best[0]
        at = where[0]
        cuda.syncthreads()
        if at >= size or (has_limit and float64(top) < limit):
            break
        if tid == 0:
            _record_peak(maps, peaks, n, m, round_, at)
        found = round_ + 1
        cuda.syncthreads()
    if tid == 0:
        counts[n, m] = found
