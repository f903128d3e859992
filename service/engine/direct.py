"""Direct (spatial) correlation: the path for small templates.

Layering: serial row kernels do the arithmetic; ``correlate_direct`` spreads
output rows over threads. Kernels come in pairs: each frame row segment that is
loaded serves two kernels, and each pass over a row folds four template taps
into one fused multiply-add chain, so the inner loop is bound by arithmetic,
not by loads and stores of the output row. The innermost loop runs along x
over contiguous views, which LLVM vectorises.
"""

import numpy as np
from numba import njit, prange

from .runtime import FASTMATH, JIT
from .scores import CCOEFF_NORMED, row_scores, window_row


@njit(fastmath=FASTMATH, **JIT)
def _row_pair_unit(o0, o1, planes, kernels, active, k0, yy, ox, width):
    """Accumulate one output row of kernels k0 and k0+1 at stride 1."""
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
            for j in range(kw4, kw):
                a0 = ka[j]
                b0 = kb[j]
                r0 = row[ox + j: ox + j + width]
                for x in range(width):
                    o0[x] += a0 * r0[x]
                    o1[x] += b0 * r0[x]


@njit(fastmath=FASTMATH, **JIT)
def _row_pair_strided(o0, o1, planes, kernels, active, k0, yy, ox, stride, width):
    """Accumulate one output row of kernels k0 and k0+1, every ``stride`` pixels."""
    n_planes, kh, kw = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    for c in range(n_planes):
        if not active[c]:
            continue
        for i in range(kh):
            row = planes[c, yy + i]
            for j in range(kw):
                a = kernels[k0, c, i, j]
                b = kernels[k0 + 1, c, i, j]
                base = ox + j
                for x in range(width):
                    f = row[base + x * stride]
                    o0[x] += a * f
                    o1[x] += b * f


@njit(parallel=True, fastmath=FASTMATH, **JIT)
def correlate_direct(planes, kernels, active, oy, ox, stride, out):
    """Correlate a stack of planes with a bank of same-sized kernels.

    ``out[k, y, x] = sum_{c,i,j} kernels[k, c, i, j] *
    planes[c, oy + y*stride + i, ox + x*stride + j]``; skipped positions are
    never computed.

    Parameters
    ----------
    planes : float32 array, (P, H, W)
        The (padded) frame, one plane per channel.
    kernels : float32 array, (K, P, h, w)
        K even (pad with a zero kernel).
    active : uint8 array, (K // 2, P)
        Whether either kernel of a pair has a non-zero plane ``c``.
    oy, ox : int
        Offset of the first window in ``planes``.
    stride : int
    out : float32 array, (K, Ho, Wo)
        Overwritten with the correlations.
    """
    n_kernels, height, width = out.shape
    for y in prange(height):
        # A contiguous buffer: out[:, y] is strided across kernels, and
        # strided rows would not vectorise.
        rows = np.empty((n_kernels, width), np.float32)
        _correlate_row(planes, kernels, active, oy + y * stride, ox, stride, rows)
        out[:, y] = rows


@njit(**JIT)
def _correlate_row(planes, kernels, active, yy, ox, stride, rows):
    """One output row of every kernel, into ``rows`` (K, Wo)."""
    width = rows.shape[1]
    rows[:] = 0.0
    for p in range(kernels.shape[0] // 2):
        k0 = 2 * p
        if stride == 1:
            _row_pair_unit(rows[k0], rows[k0 + 1], planes, kernels, active[p], k0, yy, ox, width)
        else:
            _row_pair_strided(rows[k0], rows[k0 + 1], planes, kernels, active[p], k0, yy, ox, stride, width)


@njit(parallel=True, error_model="numpy", **JIT)
def match_direct(planes, kernels, active, oy, ox, stride, sums, sqsum, tenergy, method, out):
    """Correlate and score in one pass, a row at a time.

    Each output row's correlations stay in a small buffer, in cache, and are
    scored there with the row's window statistics (computed once for all
    templates), so the raw correlations never travel through memory.

    Parameters
    ----------
    planes, kernels, active, oy, ox, stride
        As for :func:`correlate_direct`.
    sums, sqsum : float64 arrays
        The padded frame's integral images (see ``integral_images``).
    tenergy : float64 array, (n,)
        Each template kernel's sum of squares.
    method : int
        A method that needs window statistics (not ccorr or ccoeff).
    out : float32 array, (n, Ho, Wo)
        The scores of the first n kernels.
    """
    n_members, height, width = out.shape
    kh, kw = kernels.shape[2], kernels.shape[3]
    inv_tnorm = np.where(tenergy > 0.0, 1.0 / np.sqrt(tenergy), np.inf)
    for y in prange(height):
        yy = oy + y * stride
        rows = np.empty((kernels.shape[0], width), np.float32)
        _correlate_row(planes, kernels, active, yy, ox, stride, rows)
        energy = np.empty(width)
        inv_norm = np.empty(width)
        window_row(sums, sqsum, yy, kh, ox, kw, stride, method == CCOEFF_NORMED, energy, inv_norm)
        for k in range(n_members):
            row_scores(method, rows[k], out[k, y], energy, inv_norm, inv_tnorm[k], tenergy[k])
