"""Direct (spatial) correlation: the path for small templates.

Layering: serial tile kernels do the arithmetic; ``correlate_direct`` and
``match_direct`` spread output rows over threads. An output row is cut into
tiles of :data:`TILE` columns (four vectors of :data:`lanes.LANES`); a tile
of :data:`BLOCK` kernels keeps its BLOCK x 4 vectors of correlations in
registers over every tap of the templates, and each tap costs BLOCK
broadcasts and four loads of frame pixels for 4 x BLOCK fused
multiply-adds, with no output traffic at all. That is what lifted the path
from about half of the machine's multiply-add rate (Numba's own
vectorisation streams the outputs through memory) to near its matmul
ceiling. Kernels go in full blocks and one block of the rest (see
:func:`kernel_block`), so no zero kernels pad a bank. The last tile of a
row overlaps the one before it (recomputing a few values the same way)
instead of running a slower tail; a row narrower than a tile is widened
with zeros to one.

A stride along x would break the frame's contiguity, so it never reaches
these kernels: :func:`split_phases` turns "every s-th column" into s
unit-stride phase planes, and :func:`phase_kernels` splits each kernel to
match. Output rows are simply skipped. Either way, skipped positions are
never computed.
"""

import numpy as np
from numba import njit, prange

from .lanes import LANES, add, fma, load, splat, store, zeros
from .runtime import JIT
from .scores import CCOEFF_NORMED, add_means, row_scores, window_row, window_sums

#: Output columns per tile: four vectors.
TILE = 4 * LANES
# Where a tile's second, third and fourth vectors start.
L1, L2, L3 = LANES, 2 * LANES, 3 * LANES
#: Kernels per tile: as many as the registers hold with their four vectors of
#: sums, the taps' broadcasts and a frame vector: four of AVX-512's 32, three
#: of AVX2's 16 (four there spilled, and ran about 1.5x slower than three).
BLOCK = 4 if LANES == 16 else 3


@njit(**JIT)
def kernel_blocks(n):
    """How many blocks ``n`` kernels make: full blocks of :data:`BLOCK`, then one of the rest."""
    return -(-n // BLOCK)


@njit(**JIT)
def kernel_block(b, n):
    """First kernel and size of block ``b`` of ``n`` kernels."""
    return BLOCK * b, min(BLOCK, n - BLOCK * b)


# The tiles broadcast a tap of each kernel first, then load the frame one
# vector at a time: the order in which LLVM then allocates registers fits
# AVX2's sixteen (frame vectors first needed more, and spilled). The four
# tiles repeat one skeleton on purpose: each names its accumulators, which
# is what keeps them in registers (a loop over an array of them would not).


@njit(**JIT)
def _tile4(out, y, x, planes, kernels, active, k0, yy, ox):
    """out[k0 .. k0+3, y, x .. x+TILE-1]: four kernels by four vectors, in registers."""
    n_planes, kh, kw = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = c0 = c1 = c2 = c3 = d0 = d1 = d2 = d3 = zeros()
    for c in range(n_planes):
        if not active[c]:
            continue
        for i in range(kh):
            row = planes[c, yy + i]
            ka, kb, kc, kd = kernels[k0, c, i], kernels[k0 + 1, c, i], kernels[k0 + 2, c, i], kernels[k0 + 3, c, i]
            for j in range(kw):
                at = ox + x + j
                ta, tb, tc, td = splat(ka[j]), splat(kb[j]), splat(kc[j]), splat(kd[j])
                f = load(row, at)
                a0, b0, c0, d0 = fma(ta, f, a0), fma(tb, f, b0), fma(tc, f, c0), fma(td, f, d0)
                f = load(row, at + L1)
                a1, b1, c1, d1 = fma(ta, f, a1), fma(tb, f, b1), fma(tc, f, c1), fma(td, f, d1)
                f = load(row, at + L2)
                a2, b2, c2, d2 = fma(ta, f, a2), fma(tb, f, b2), fma(tc, f, c2), fma(td, f, d2)
                f = load(row, at + L3)
                a3, b3, c3, d3 = fma(ta, f, a3), fma(tb, f, b3), fma(tc, f, c3), fma(td, f, d3)
    _store4(out[k0, y], x, a0, a1, a2, a3)
    _store4(out[k0 + 1, y], x, b0, b1, b2, b3)
    _store4(out[k0 + 2, y], x, c0, c1, c2, c3)
    _store4(out[k0 + 3, y], x, d0, d1, d2, d3)


@njit(**JIT)
def _tile3(out, y, x, planes, kernels, active, k0, yy, ox):
    """:func:`_tile4` for three kernels."""
    n_planes, kh, kw = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = c0 = c1 = c2 = c3 = zeros()
    for c in range(n_planes):
        if not active[c]:
            continue
        for i in range(kh):
            row = planes[c, yy + i]
            ka, kb, kc = kernels[k0, c, i], kernels[k0 + 1, c, i], kernels[k0 + 2, c, i]
            for j in range(kw):
                at = ox + x + j
                ta, tb, tc = splat(ka[j]), splat(kb[j]), splat(kc[j])
                f = load(row, at)
                a0, b0, c0 = fma(ta, f, a0), fma(tb, f, b0), fma(tc, f, c0)
                f = load(row, at + L1)
                a1, b1, c1 = fma(ta, f, a1), fma(tb, f, b1), fma(tc, f, c1)
                f = load(row, at + L2)
                a2, b2, c2 = fma(ta, f, a2), fma(tb, f, b2), fma(tc, f, c2)
                f = load(row, at + L3)
                a3, b3, c3 = fma(ta, f, a3), fma(tb, f, b3), fma(tc, f, c3)
    _store4(out[k0, y], x, a0, a1, a2, a3)
    _store4(out[k0 + 1, y], x, b0, b1, b2, b3)
    _store4(out[k0 + 2, y], x, c0, c1, c2, c3)


@njit(**JIT)
def _tile2(out, y, x, planes, kernels, active, k0, yy, ox):
    """:func:`_tile4` for a pair of kernels."""
    n_planes, kh, kw = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zeros()
    for c in range(n_planes):
        if not active[c]:
            continue
        for i in range(kh):
            row = planes[c, yy + i]
            ka, kb = kernels[k0, c, i], kernels[k0 + 1, c, i]
            for j in range(kw):
                at = ox + x + j
                ta, tb = splat(ka[j]), splat(kb[j])
                f = load(row, at)
                a0, b0 = fma(ta, f, a0), fma(tb, f, b0)
                f = load(row, at + L1)
                a1, b1 = fma(ta, f, a1), fma(tb, f, b1)
                f = load(row, at + L2)
                a2, b2 = fma(ta, f, a2), fma(tb, f, b2)
                f = load(row, at + L3)
                a3, b3 = fma(ta, f, a3), fma(tb, f, b3)
    _store4(out[k0, y], x, a0, a1, a2, a3)
    _store4(out[k0 + 1, y], x, b0, b1, b2, b3)


@njit(**JIT)
def _tile1(out, y, x, planes, kernels, active, k0, yy, ox):
    """:func:`_tile4` for one kernel.

    Taps alternate between two sets of four accumulators: a fused
    multiply-add takes four cycles and the machine starts two a cycle, so
    four chains alone would leave half of it idle.
    """
    n_planes, kh, kw = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    a0 = a1 = a2 = a3 = e0 = e1 = e2 = e3 = zeros()
    for c in range(n_planes):
        if not active[c]:
            continue
        for i in range(kh):
            row = planes[c, yy + i]
            ka = kernels[k0, c, i]
            for j in range(0, kw - 1, 2):
                at = ox + x + j
                t = splat(ka[j])
                a0, a1 = fma(t, load(row, at), a0), fma(t, load(row, at + L1), a1)
                a2, a3 = fma(t, load(row, at + L2), a2), fma(t, load(row, at + L3), a3)
                t = splat(ka[j + 1])
                e0, e1 = fma(t, load(row, at + 1), e0), fma(t, load(row, at + L1 + 1), e1)
                e2, e3 = fma(t, load(row, at + L2 + 1), e2), fma(t, load(row, at + L3 + 1), e3)
            if kw % 2:
                at = ox + x + kw - 1
                t = splat(ka[kw - 1])
                a0, a1 = fma(t, load(row, at), a0), fma(t, load(row, at + L1), a1)
                a2, a3 = fma(t, load(row, at + L2), a2), fma(t, load(row, at + L3), a3)
    _store4(out[k0, y], x, add(a0, e0), add(a1, e1), add(a2, e2), add(a3, e3))


@njit(**JIT)
def _store4(row, x, v0, v1, v2, v3):
    store(row, x, v0)
    store(row, x + L1, v1)
    store(row, x + L2, v2)
    store(row, x + L3, v3)


@njit(**JIT)
def _row(index):
    """``index`` as an int64.

    Every caller passes the tiles int64 positions, so each tile compiles
    once: a parallel loop's index (uint64) and a literal 0 made three
    versions of each, and doubled the engine's cold compile time.
    """
    return np.int64(index)


@njit(**JIT)
def _tiles(target, y, planes, kernels, active, yy, ox):
    """Row ``y`` of every map in ``target`` (K, H, Wo), at least a tile wide, tile by tile."""
    width = target.shape[2]
    n = kernels.shape[0]
    for b in range(kernel_blocks(n)):
        k0, size = kernel_block(b, n)
        for t in range(-(-width // TILE)):
            # The last tile ends at the row's end, overlapping its neighbour.
            x = min(t * TILE, width - TILE)
            if size == 4:
                _tile4(target, y, x, planes, kernels, active[b], k0, yy, ox)
            elif size == 3:
                _tile3(target, y, x, planes, kernels, active[b], k0, yy, ox)
            elif size == 2:
                _tile2(target, y, x, planes, kernels, active[b], k0, yy, ox)
            else:
                _tile1(target, y, x, planes, kernels, active[b], k0, yy, ox)


@njit(**JIT)
def _accumulate_row(target, y, planes, kernels, active, yy, ox):
    """Set row ``y`` of every map in ``target`` (K, H, Wo) to the kernels' correlations."""
    width = target.shape[2]
    if width >= TILE:
        _tiles(target, y, planes, kernels, active, yy, ox)
        return
    # A row narrower than a tile: the frame under it, widened with zeros to
    # a tile, goes through the same tiles, and the row keeps its part.
    n_planes, kh, kw = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    # (Plain loops: slice assignments cost seconds of compile time.)
    window = np.zeros((n_planes, kh, TILE + kw - 1), np.float32)
    for c in range(n_planes):
        for i in range(kh):
            source, row = planes[c, yy + i], window[c, i]
            for x in range(width + kw - 1):
                row[x] = source[ox + x]
    wide = np.empty((kernels.shape[0], 1, TILE), np.float32)
    _tiles(wide, _row(0), window, kernels, active, _row(0), _row(0))
    for k in range(kernels.shape[0]):
        source, row = wide[k, 0], target[k, y]
        for x in range(width):
            row[x] = source[x]


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


def block_activity(kernels: np.ndarray) -> np.ndarray:
    """(blocks, P) uint8: whether any kernel of a block (see :func:`kernel_block`) has a non-zero plane ``c``."""
    n = len(kernels)
    nonzero = kernels.reshape(n, kernels.shape[1], -1).any(axis=2)
    starts = [kernel_block(b, n)[0] for b in range(kernel_blocks(n))]
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
        _accumulate_row(out, _row(y), planes, kernels, active, yy, ox)
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
        _accumulate_row(buffer, _row(0), planes, kernels, active, yy, ox)
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
