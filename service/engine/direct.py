"""Direct (spatial) correlation: the path for small templates.

Layering: serial row kernels do the arithmetic; ``correlate_direct`` and
``match_direct`` spread output rows over threads. Kernels go in blocks of
three (and one pair at the end, see :func:`padded_count`): each frame row
segment that is loaded serves three kernels, and each pass over a row folds
four template taps into one fused multiply-add chain per kernel, so the inner
loop is bound by arithmetic, not by loads and stores of the output rows.
Three kernels x four taps is what AVX2's sixteen vector registers hold; it
measured about 10% faster than pairs and than blocks of four. The innermost
loop runs along x over contiguous views, which LLVM vectorises.

A stride along x would break that contiguity, so it never reaches these
kernels: :func:`split_phases` turns "every s-th column" into s unit-stride
phase planes, and :func:`phase_kernels` splits each kernel to match. Output
rows are simply skipped. Either way, skipped positions are never computed.
"""

import numpy as np
from numba import njit, prange

from .runtime import FASTMATH, JIT
from .scores import CCOEFF_NORMED, add_means, row_scores, window_row, window_sums


@njit(fastmath=FASTMATH, **JIT)
def _row_trio(o0, o1, o2, planes, kernels, active, k0, yy, ox, width):
    """Accumulate one output row of kernels k0, k0+1 and k0+2."""
    n_planes, kh, kw = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    kw4 = kw - kw % 4
    for c in range(n_planes):
        if not active[c]:
            continue
        for i in range(kh):
            row = planes[c, yy + i]
            ka = kernels[k0, c, i]
            kb = kernels[k0 + 1, c, i]
            kc = kernels[k0 + 2, c, i]
            for j in range(0, kw4, 4):
                a0, a1, a2, a3 = ka[j], ka[j + 1], ka[j + 2], ka[j + 3]
                b0, b1, b2, b3 = kb[j], kb[j + 1], kb[j + 2], kb[j + 3]
                c0, c1, c2, c3 = kc[j], kc[j + 1], kc[j + 2], kc[j + 3]
                # Views with computed bounds: indices into them are provably
                # non-negative, so no wrap-around test blocks vectorisation.
                r0 = row[ox + j: ox + j + width]
                r1 = row[ox + j + 1: ox + j + 1 + width]
                r2 = row[ox + j + 2: ox + j + 2 + width]
                r3 = row[ox + j + 3: ox + j + 3 + width]
                for x in range(width):
                    f0, f1, f2, f3 = r0[x], r1[x], r2[x], r3[x]
                    o0[x] += a0 * f0 + a1 * f1 + a2 * f2 + a3 * f3
                    o1[x] += b0 * f0 + b1 * f1 + b2 * f2 + b3 * f3
                    o2[x] += c0 * f0 + c1 * f1 + c2 * f2 + c3 * f3
            for j in range(kw4, kw):
                a0, b0, c0 = ka[j], kb[j], kc[j]
                r0 = row[ox + j: ox + j + width]
                for x in range(width):
                    f0 = r0[x]
                    o0[x] += a0 * f0
                    o1[x] += b0 * f0
                    o2[x] += c0 * f0


@njit(fastmath=FASTMATH, **JIT)
def _row_pair(o0, o1, planes, kernels, active, k0, yy, ox, width):
    """Accumulate one output row of kernels k0 and k0+1 (the tail of a bank).

    :func:`_row_trio` with a zero third kernel would give the same result at
    half as much work again on the tail; the two stay separate on purpose.
    """
    n_planes, kh, kw = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    kw4 = kw - kw % 4
    for c in range(n_planes):
        if not active[c]:
            continue
        for i in range(kh):
            row = planes[c, yy + i]
            ka = kernels[k0, c, i]
            kb = kernels[k0 + 1, c, i]
            for j in range(0, kw4, 4):
                a0, a1, a2, a3 = ka[j], ka[j + 1], ka[j + 2], ka[j + 3]
                b0, b1, b2, b3 = kb[j], kb[j + 1], kb[j + 2], kb[j + 3]
                r0 = row[ox + j: ox + j + width]
                r1 = row[ox + j + 1: ox + j + 1 + width]
                r2 = row[ox + j + 2: ox + j + 2 + width]
                r3 = row[ox + j + 3: ox + j + 3 + width]
                for x in range(width):
                    f0, f1, f2, f3 = r0[x], r1[x], r2[x], r3[x]
                    o0[x] += a0 * f0 + a1 * f1 + a2 * f2 + a3 * f3
                    o1[x] += b0 * f0 + b1 * f1 + b2 * f2 + b3 * f3
            for j in range(kw4, kw):
                a0, b0 = ka[j], kb[j]
                r0 = row[ox + j: ox + j + width]
                for x in range(width):
                    o0[x] += a0 * r0[x]
                    o1[x] += b0 * r0[x]


@njit(**JIT)
def _accumulate_row(target, y, planes, kernels, active, yy, ox):
    """Set row ``y`` of every map in ``target`` (K, H, Wo) to the kernels' correlations."""
    width = target.shape[2]
    n_trios = kernels.shape[0] // 3
    for b in range(n_trios):
        o0, o1, o2 = target[3 * b, y], target[3 * b + 1, y], target[3 * b + 2, y]
        o0[:] = 0.0
        o1[:] = 0.0
        o2[:] = 0.0
        _row_trio(o0, o1, o2, planes, kernels, active[b], 3 * b, yy, ox, width)
    if kernels.shape[0] % 3:
        k0 = 3 * n_trios
        o0, o1 = target[k0, y], target[k0 + 1, y]
        o0[:] = 0.0
        o1[:] = 0.0
        _row_pair(o0, o1, planes, kernels, active[n_trios], k0, yy, ox, width)


@njit(**JIT)
def _restore_means(target, y, tmeans, sums, yy, kh, wx, kw, stride):
    """Row ``y`` of the first len(tmeans) maps of ``target`` plus each kernel's mean x the windows' sums.

    The ccorr pair's kernels are the templates less their means (see
    :func:`scores.add_means`); the windows' top row is ``yy`` of the frame.
    """
    wsums = np.empty(target.shape[2])
    window_sums(sums, yy, kh, wx, kw, stride, wsums)
    for k in range(tmeans.shape[0]):
        add_means(target[k, y], tmeans[k], wsums)


def padded_count(n: int) -> int:
    """Kernel count after padding with zero kernels: blocks of three and at most one pair."""
    n = max(n, 2)
    return n + 1 if n % 3 == 1 else n


def block_activity(kernels: np.ndarray) -> np.ndarray:
    """(blocks, P) uint8: whether any kernel of a block has a non-zero plane ``c``."""
    nonzero = kernels.reshape(len(kernels), kernels.shape[1], -1).any(axis=2)
    starts = list(range(0, len(kernels), 3))
    return np.logical_or.reduceat(nonzero, starts, axis=0).astype(np.uint8)


@njit(parallel=True, **JIT)
def correlate_direct(planes, kernels, active, oy, ox, row_stride, tmeans, sums, wx, kh, kw, out):
    """Correlate a stack of planes with a bank of same-sized kernels.

    ``out[k, y, x] = sum_{c,i,j} kernels[k, c, i, j] *
    planes[c, oy + y*row_stride + i, ox + x + j]``.

    Parameters
    ----------
    planes : float32 array, (P, H, W)
        The (padded, and for a column stride phase-split) frame.
    kernels : float32 array, (K, P, h, w)
        K from :func:`padded_count` (pad with zero kernels).
    active : uint8 array, (blocks, P)
        From :func:`block_activity`.
    oy, ox : int
        Offset of the first window in ``planes``.
    row_stride : int
        Output rows sample every ``row_stride``-th frame row.
    tmeans : float64 array, (n,) or (0,)
        The means taken off the first n kernels (ccorr), restored with the
        window sums while each row is in cache (see :func:`scores.add_means`);
        none otherwise.
    sums : float64 array, (C, H+1, W+1)
        The frame's integral images (used with ``tmeans`` only).
    wx, kh, kw : int
        The windows' first left column (the same stride), height and width.
    out : float32 array, (K, Ho, Wo)
        Overwritten with the correlations.
    """
    height = out.shape[1]
    for y in prange(height):
        # Straight into the output rows: each out[k, y] is contiguous (a
        # copy through a row buffer costs a quarter of the kernel's time).
        yy = oy + y * row_stride
        _accumulate_row(out, y, planes, kernels, active, yy, ox)
        if tmeans.shape[0]:
            _restore_means(out, y, tmeans, sums, yy, kh, wx, kw, row_stride)


@njit(parallel=True, error_model="numpy", **JIT)
def match_direct(planes, kernels, active, oy, ox, row_stride, sums, sqsum, wx, stride, kh, kw, tenergy,
                 tnorm_energy, tmeans, method, flat, offsets, out):
    """Correlate and score in one pass, a row at a time.

    Each output row's correlations stay in a small buffer, in cache, and are
    scored there with the row's window statistics (computed once for all
    templates), so the raw correlations never travel through memory.

    Parameters
    ----------
    planes, kernels, active, oy, ox, row_stride
        As for :func:`correlate_direct`.
    sums, sqsum : float64 arrays
        The padded frame's integral images (see ``integral_images``).
    wx, stride, kh, kw : int
        The windows in the padded frame: first left column, stride, size.
    tenergy : float64 array, (n,)
        Each template kernel's sum of squares.
    tnorm_energy : float64 array, (n,)
        The same for the norm (uncentred, where the planes are offset for sqdiff_normed).
    tmeans : float64 array, (n,) or (0,)
        The mean taken off each kernel (ccorr_normed), restored with the
        window sums (see :func:`scores.add_means`); none otherwise.
    method : int
        A method that needs window statistics (not ccorr or ccoeff).
    flat : float
        :func:`scores.flat_tolerance` of the frame's planes.
    offsets : float64 array, (C,)
        What was taken off each plane (see :func:`scores.window_row`).
    out : float32 array, (n, Ho, Wo)
        The scores of the first n kernels.
    """
    n_members, height, width = out.shape
    inv_tnorm = np.where(tnorm_energy > 0.0, 1.0 / np.sqrt(tnorm_energy), np.inf)
    for y in prange(height):
        yy = oy + y * row_stride
        buffer = np.empty((kernels.shape[0], 1, width), np.float32)
        _accumulate_row(buffer, 0, planes, kernels, active, yy, ox)
        energy = np.empty(width)
        inv_norm = np.empty(width)
        window_row(sums, sqsum, yy, kh, wx, kw, stride, method == CCOEFF_NORMED, flat, offsets, energy, inv_norm)
        if tmeans.shape[0]:
            _restore_means(buffer, 0, tmeans, sums, yy, kh, wx, kw, stride)
        for k in range(n_members):
            row_scores(method, buffer[k, 0], out[k, y], energy, inv_norm, inv_tnorm[k], tenergy[k])


def split_phases(planes: np.ndarray, stride: int) -> np.ndarray:
    """Phase planes for a column stride: plane ``c*stride + r`` holds columns r, r+s, ... of plane c.

    Padded with zeros to a common width; the padding only ever meets zero taps.
    """
    n_planes, height, width = planes.shape
    phased = np.zeros((n_planes * stride, height, -(-width // stride)), np.float32)
    for c in range(n_planes):
        for r in range(stride):
            columns = planes[c, :, r::stride]
            phased[c * stride + r, :, : columns.shape[1]] = columns
    return phased


def phase_kernels(kernels: np.ndarray, ox: int, stride: int) -> tuple[np.ndarray, int]:
    """Kernels for :func:`split_phases` planes, and the offset into those planes.

    Tap j of a window whose first column is ``ox + x*stride`` reads column
    ``ox + j + x*stride``: phase ``(ox + j) % stride``, phase column
    ``(ox + j) // stride + x``.
    """
    n, n_planes, kh, kw = kernels.shape
    first = ox // stride
    width = (ox % stride + kw - 1) // stride + 1
    phased = np.zeros((n, n_planes * stride, kh, width), np.float32)
    for j in range(kw):
        phase, column = (ox + j) % stride, (ox + j) // stride - first
        phased[:, phase::stride, :, column] = kernels[:, :, :, j]
    return phased, first
