"""The GPU path's kernels (numba-cuda): the CPU path's maps, computed on the device.

Imported only when a Matcher is made with ``device="cuda"`` (numba-cuda must
be installed). Per batch of frames, in one CUDA stream (every launch covers
the whole batch):

1. :func:`channel_sums` (the ccoeff pair only) and :func:`make_planes`: the
   uploaded frames (uint8 or float, as they came) padded with the Matcher's
   border, less each channel's offset, as float32 planes, and their largest
   magnitude (for the flatness tolerance, as scores.flat_tolerance);
2. :func:`row_prefix` and :func:`column_prefix`: float64 row prefix sums
   (masked statistics) and integral images (unmasked ones), by parallel
   scans;
3. per group of same-sized templates, :func:`correlate`: the tiled direct
   correlation (frame tile and kernel taps in shared memory, each thread
   accumulating RX output positions x KT kernels in registers), then one
   scoring kernel: :func:`score_plain`, :func:`score_masked` or
   :func:`score_ssim`, the CPU path's formulas from the same source
   (scores.score_formula and friends);
4. :func:`partial_peaks` and :func:`pick_peaks` (a few peaks: many blocks
   per map, round by round) or :func:`top_peaks` (many: one block per map,
   all rounds): greedy top-k with non-maximum suppression on the device, so
   only peaks cross back unless maps are asked for.

Statistics are float64 as on the CPU; correlations accumulate in float32 as
the CPU's direct path does. Device helpers are inlined (``inline="always"``):
each kernel compiles as one unit, also without a GPU (tests/engine/test_cuda.py
compiles them all to PTX).
"""

import math
import os

import numpy as np
from numba import cuda, float32, float64, int64

from ..scores import (
    CCOEFF,
    CCOEFF_NORMED,
    CCORR,
    CCORR_NORMED,
    FLAT_ROUNDING_UNITS,
    SQDIFF_NORMED,
    inverse_norm_formula,
    score_formula,
    ssim_formula,
)

#: Under Numba's CUDA simulator every GPU thread is a Python thread: blocks
#: are small there, which also makes the tests' tiny frames cross many tile
#: edges. The kernels are the same code either way.
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
#: Threads of a correlation block (x, y); outputs per thread along x (TX apart,
#: so loads and stores coalesce); kernels per thread (KT = 4 is written out in
#: correlate's inner loop). RX x KT accumulators live in registers.
TX, TY, RX, KT = (8, 2, 2, 4) if SIMULATED else (32, 8, 4, 4)
#: Shared memory one correlation block may use (the default limit is 48 KiB;
#: in the simulator a few rows, so that small templates take several passes).
SHARED_FLOATS = 160 if SIMULATED else 40 * 1024 // 4
#: Threads of the other kernels' blocks (2-D: PX x PY, a power of two; the
#: peak reduction: 1-D, a power of two).
PX, PY = (4, 2) if SIMULATED else (32, 8)
PEAK_THREADS = 8 if SIMULATED else 256
#: Threads of one PX x PY block, and the accumulators of one correlation
#: thread: named constants, because a shared or local array's size must be a
#: literal when the kernel is compiled (an expression is not folded).
BLOCK_THREADS = PX * PY
ACCUMULATORS = RX * KT
#: The row scans: threads per row (a power of two; a warp) and rows per
#: block. The column scans: rows of threads, each PX columns wide.
LINE_THREADS, LINE_ROWS = (2, 8) if SIMULATED else (32, 8)
COLUMN_THREADS = 2 if SIMULATED else 16
#: Most blocks a launch has along x, and along y (65535 is the hardware's
#: limit along y and z). Every kernel loops over what its grid does not cover
#: (grid-stride loops), so a capped grid is still complete; the simulator
#: caps at 2 along x and 1 along y, which keeps its Python threads few while
#: blocks past the first are still exercised.
MAX_GRID, MAX_GRID_Y = (2, 1) if SIMULATED else (2 ** 31 - 1, 65535)


def blocks(items: int, per_block: int, most: int = MAX_GRID) -> int:
    """Blocks along a grid-strided dimension: enough for ``items``, at most ``most``."""
    return max(1, min(-(-items // per_block), most))


MAX_CHANNELS = 4
_EPS = float(np.finfo(np.float64).eps)

_inverse_norm = cuda.jit(device=True, inline="always")(inverse_norm_formula)
_score = cuda.jit(device=True, inline="always")(score_formula)
_ssim = cuda.jit(device=True, inline="always")(ssim_formula)


@cuda.jit(device=True, inline="always")
def _source(i, n, border):
    """The frame index that padded index ``i`` reads (OpenCV's borders), or -1 for the constant border.

    border: 0 constant, 1 reflect-101, 2 replicate.
    """
    if 0 <= i < n:
        return i
    if border == 0:
        return -1
    if border == 2:
        return 0 if i < 0 else n - 1
    if n == 1:
        return 0
    while i < 0 or i >= n:
        if i < 0:
            i = -i
        if i >= n:
            i = 2 * n - 2 - i
    return i


@cuda.jit(device=True, inline="always")
def _flat(magnitudes, n, cells):
    """scores.flat_tolerance of frame ``n``'s planes, from their largest magnitude."""
    m = magnitudes[n]
    return FLAT_ROUNDING_UNITS * _EPS * cells * m * m


@cuda.jit(device=True, inline="always")
def _box(table, n, c, y0, y1, x0, x1):
    """A window's sum from an integral image: the CPU's four lookups, in its order."""
    return table[n, c, y1, x1] - table[n, c, y0, x1] - table[n, c, y1, x0] + table[n, c, y0, x0]


@cuda.jit(cache=True)
def channel_sums(frames, top, left, height, width, border, border_value, sums):
    """Add each channel's sum over the padded frame (float64) into ``sums`` (N, C), zeroed first."""
    partial = cuda.shared.array((MAX_CHANNELS, BLOCK_THREADS), float64)
    own = cuda.local.array(MAX_CHANNELS, float64)
    x0, y0 = cuda.grid(2)
    step_x, step_y = cuda.gridsize(2)
    n = cuda.blockIdx.z
    tid = cuda.threadIdx.y * PX + cuda.threadIdx.x
    channels = frames.shape[3]
    for c in range(channels):
        own[c] = 0.0
    for y in range(y0, height, step_y):
        sy = _source(y - top, frames.shape[1], border)
        for x in range(x0, width, step_x):
            sx = _source(x - left, frames.shape[2], border)
            for c in range(channels):
                v = float32(border_value) if sy < 0 or sx < 0 else float32(frames[n, sy, sx, c])
                own[c] += float64(v)
    for c in range(channels):
        partial[c, tid] = own[c]
    cuda.syncthreads()
    step = BLOCK_THREADS // 2
    while step > 0:
        if tid < step:
            for c in range(channels):
                partial[c, tid] += partial[c, tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        for c in range(channels):
            cuda.atomic.add(sums, (n, c), partial[c, 0])


@cuda.jit(cache=True)
def make_planes(frames, top, left, border, border_value, sums, inv_count, planes, magnitudes):
    """Pad, convert and offset the frames into float32 planes (N, C, Hp, Wp); their largest |value| per frame.

    The offset of channel c is float32(sums[n, c] * inv_count): the channel's
    mean (the ccoeff pair) or the templates' offset (the sqdiff pair, with
    inv_count 1), as the CPU path takes them off.
    """
    largest = cuda.shared.array(BLOCK_THREADS, float32)
    x0, y0 = cuda.grid(2)
    step_x, step_y = cuda.gridsize(2)
    n = cuda.blockIdx.z
    tid = cuda.threadIdx.y * PX + cuda.threadIdx.x
    height, width = planes.shape[2], planes.shape[3]
    most = float32(0.0)
    for y in range(y0, height, step_y):
        sy = _source(y - top, frames.shape[1], border)
        for x in range(x0, width, step_x):
            sx = _source(x - left, frames.shape[2], border)
            for c in range(planes.shape[1]):
                v = float32(border_value) if sy < 0 or sx < 0 else float32(frames[n, sy, sx, c])
                v = v - float32(sums[n, c] * inv_count)
                planes[n, c, y, x] = v
                most = max(most, abs(v))
    largest[tid] = most
    cuda.syncthreads()
    step = BLOCK_THREADS // 2
    while step > 0:
        if tid < step:
            largest[tid] = max(largest[tid], largest[tid + step])
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        cuda.atomic.max(magnitudes, n, float64(largest[0]))


@cuda.jit(device=True, inline="always")
def _line_value(planes, n, y, x, q, n_planes, per_plane):
    """Entry x of row y of line q: plane q (q < C), else the squares, per plane (ssim) or summed over planes."""
    if q < n_planes:
        return float64(planes[n, q, y, x])
    if per_plane:
        v = float64(planes[n, q - n_planes, y, x])
        return v * v
    total = 0.0
    for c in range(n_planes):
        v = float64(planes[n, c, y, x])
        total += v * v
    return total


@cuda.jit(cache=True)
def row_prefix(planes, prefix, sqprefix):
    """Float64 running sums along each row: prefix (N, C, Hp, Wp+1) per plane; sqprefix of squares,
    (N, 1, ...) over every plane or (N, C, ...) per plane (ssim).

    A block takes LINE_ROWS rows, LINE_THREADS threads each (grid: row
    groups, N): each thread sums a stretch of its row, the row's threads scan
    their totals in shared memory, and each thread writes its stretch's
    running sums from its offset. A row costs Wp / LINE_THREADS sequential
    steps, not Wp.
    """
    totals = cuda.shared.array((LINE_ROWS, LINE_THREADS), float64)
    n = cuda.blockIdx.y
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    n_planes, height, width = planes.shape[1], planes.shape[2], planes.shape[3]
    per_plane = sqprefix.shape[1] > 1
    lines = n_planes + sqprefix.shape[1]
    stretch = (width + LINE_THREADS - 1) // LINE_THREADS
    x0 = min(tx * stretch, width)
    x1 = min(x0 + stretch, width)
    groups = (height + LINE_ROWS - 1) // LINE_ROWS
    for group in range(cuda.blockIdx.x, groups, cuda.gridDim.x):
        y = group * LINE_ROWS + ty
        inside = y < height
        for q in range(lines):
            own = 0.0
            if inside:
                for x in range(x0, x1):
                    own += _line_value(planes, n, y, x, q, n_planes, per_plane)
            totals[ty, tx] = own
            cuda.syncthreads()
            # Inclusive scan of the row's totals (Hillis-Steele), read and written in turn.
            step = 1
            while step < LINE_THREADS:
                before = totals[ty, tx - step] if tx >= step else 0.0
                cuda.syncthreads()
                totals[ty, tx] += before
                cuda.syncthreads()
                step *= 2
            running = totals[ty, tx] - own
            cuda.syncthreads()  # every thread has read its offset before the next line's totals
            if not inside:
                continue
            if q < n_planes:
                if tx == 0:
                    prefix[n, q, y, 0] = 0.0
                for x in range(x0, x1):
                    running += _line_value(planes, n, y, x, q, n_planes, per_plane)
                    prefix[n, q, y, x + 1] = running
            else:
                if tx == 0:
                    sqprefix[n, q - n_planes, y, 0] = 0.0
                for x in range(x0, x1):
                    running += _line_value(planes, n, y, x, q, n_planes, per_plane)
                    sqprefix[n, q - n_planes, y, x + 1] = running


@cuda.jit(cache=True)
def column_prefix(rows, table):
    """Integral images (N, C, Hp+1, Wp+1) from row prefix sums (N, C, Hp, Wp+1): each row added to the one below.

    A block covers PX columns (grid: column groups, C, N); its COLUMN_THREADS
    rows of threads each sum a stretch of the rows, add the stretches above
    theirs, and write their running sums: Hp / COLUMN_THREADS steps a thread.
    """
    above = cuda.shared.array((COLUMN_THREADS, PX), float64)
    c = cuda.blockIdx.y
    n = cuda.blockIdx.z
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    height = rows.shape[2]
    stretch = (height + COLUMN_THREADS - 1) // COLUMN_THREADS
    y0 = min(ty * stretch, height)
    y1 = min(y0 + stretch, height)
    groups = (table.shape[3] + PX - 1) // PX
    for group in range(cuda.blockIdx.x, groups, cuda.gridDim.x):
        x = group * PX + tx
        inside = x < table.shape[3]
        own = 0.0
        if inside:
            for y in range(y0, y1):
                own += rows[n, c, y, x]
        above[ty, tx] = own
        cuda.syncthreads()
        running = 0.0
        for j in range(ty):
            running += above[j, tx]
        cuda.syncthreads()  # read before the next group's totals overwrite them
        if inside:
            if ty == 0:
                table[n, c, 0, x] = 0.0
            for y in range(y0, y1):
                running += rows[n, c, y, x]
                table[n, c, y + 1, x] = running


def tile_rows(kh: int, kw: int, stride: int) -> int:
    """Template rows one pass of :func:`correlate` takes (its shared memory), or 0 when none fits."""
    span_x = (TX * RX - 1) * stride + kw
    fixed = (TY - 1) * stride * span_x
    rows = (SHARED_FLOATS - fixed) // (span_x + KT * kw)
    return min(kh, rows) if rows >= 1 else 0


def tile_floats(kh: int, kw: int, stride: int, rows: int) -> int:
    """Shared floats :func:`correlate` uses with ``rows`` template rows per pass."""
    span_x = (TX * RX - 1) * stride + kw
    return ((TY - 1) * stride + rows) * span_x + KT * rows * kw


@cuda.jit(cache=True)
def correlate(planes, kernels, oy, ox, stride, rows_per_pass, out):
    """out[n, k] = sum over planes and taps of kernels[k] x the frame's window, every output position.

    planes (N, P, Hp, Wp); kernels (K, P, h, w), K a multiple of KT; out (N, K, Ho, Wo).
    A block of TX x TY threads covers TX*RX x TY outputs and KT kernels: the
    frame rows under them (``rows_per_pass`` template rows at a time) and
    those kernels' taps go to shared memory once, and every thread reuses
    each tap KT x RX times from registers. Grid: (Wo / (TX RX), Ho / TY, N K / KT).
    """
    shared = cuda.shared.array(0, float32)
    acc = cuda.local.array(ACCUMULATORS, float32)
    n_planes, height, width = planes.shape[1], planes.shape[2], planes.shape[3]
    kh, kw = kernels.shape[2], kernels.shape[3]
    chunks = kernels.shape[0] // KT
    n = cuda.blockIdx.z // chunks
    k0 = (cuda.blockIdx.z % chunks) * KT
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid = ty * TX + tx
    span_x = (TX * RX - 1) * stride + kw
    tiles_x = (out.shape[3] + TX * RX - 1) // (TX * RX)
    tiles_y = (out.shape[2] + TY - 1) // TY
    for tile_y in range(cuda.blockIdx.y, tiles_y, cuda.gridDim.y):
        for tile_x in range(cuda.blockIdx.x, tiles_x, cuda.gridDim.x):
            x_first = tile_x * TX * RX
            y_first = tile_y * TY
            fx0 = ox + x_first * stride
            fy0 = oy + y_first * stride
            for i in range(ACCUMULATORS):
                acc[i] = 0.0
            for p in range(n_planes):
                for r0 in range(0, kh, rows_per_pass):
                    rows = min(rows_per_pass, kh - r0)
                    tile = ((TY - 1) * stride + rows) * span_x
                    for i in range(tid, tile, TX * TY):
                        fy = fy0 + r0 + i // span_x
                        fx = fx0 + i % span_x
                        shared[i] = planes[n, p, fy, fx] if fy < height and fx < width else float32(0.0)
                    for i in range(tid, rows * kw * KT, TX * TY):
                        t = i % KT
                        j = (i // KT) % kw
                        shared[tile + i] = kernels[k0 + t, p, r0 + i // (KT * kw), j]
                    cuda.syncthreads()
                    for r in range(rows):
                        row = (ty * stride + r) * span_x + tx * stride
                        taps = tile + r * kw * KT
                        for j in range(kw):
                            w0 = shared[taps + j * KT]
                            w1 = shared[taps + j * KT + 1]
                            w2 = shared[taps + j * KT + 2]
                            w3 = shared[taps + j * KT + 3]
                            for q in range(RX):
                                v = shared[row + q * TX * stride + j]
                                acc[q * KT] += w0 * v
                                acc[q * KT + 1] += w1 * v
                                acc[q * KT + 2] += w2 * v
                                acc[q * KT + 3] += w3 * v
                    cuda.syncthreads()
            y = y_first + ty
            if y < out.shape[2]:
                for q in range(RX):
                    x = x_first + tx + q * TX
                    if x < out.shape[3]:
                        for t in range(KT):
                            out[n, k0 + t, y, x] = acc[q * KT + t]


@cuda.jit(cache=True)
def correlate_wide(planes, kernels, oy, ox, stride, out):
    """:func:`correlate` for templates too wide for its shared tile: KT kernels per thread, from global memory."""
    chunks = kernels.shape[0] // KT
    n = cuda.blockIdx.z // chunks
    k0 = (cuda.blockIdx.z % chunks) * KT
    acc = cuda.local.array(KT, float32)
    x_start, y_start = cuda.grid(2)
    step_x, step_y = cuda.gridsize(2)
    for y in range(y_start, out.shape[2], step_y):
        for x in range(x_start, out.shape[3], step_x):
            for t in range(KT):
                acc[t] = 0.0
            y0, x0 = oy + y * stride, ox + x * stride
            for p in range(planes.shape[1]):
                for i in range(kernels.shape[2]):
                    for j in range(kernels.shape[3]):
                        v = planes[n, p, y0 + i, x0 + j]
                        for t in range(KT):
                            acc[t] += kernels[k0 + t, p, i, j] * v
            for t in range(KT):
                out[n, k0 + t, y, x] = acc[t]


@cuda.jit(cache=True)
def score_plain(raw, integral, sqintegral, oy, ox, stride, kh, kw, code, offsets, magnitudes, cells, tenergy,
                tnorm_energy, tmeans, out):
    """Scores of an unmasked group (scores.window_row and row_scores, per window).

    raw (N, K, Ho, Wo) correlations; integral (N, C, ...) and sqintegral
    (N, 1, ...) float64 integral images of the planes and their squares;
    offsets (N, C) what was taken off each plane (the sqdiff pair); tmeans
    (M,) the means taken off the ccorr pair's kernels, or empty; out (N, M, Ho, Wo).
    """
    n = cuda.blockIdx.z
    x_start, y_start = cuda.grid(2)
    step_x, step_y = cuda.gridsize(2)
    for y in range(y_start, out.shape[2], step_y):
        for x in range(x_start, out.shape[3], step_x):
            _score_plain_at(raw, integral, sqintegral, oy, ox, stride, kh, kw, code, offsets, magnitudes, cells, tenergy,
                tnorm_energy, tmeans, out, n, y, x)


@cuda.jit(device=True, inline="always")
def _score_plain_at(raw, integral, sqintegral, oy, ox, stride, kh, kw, code, offsets, magnitudes, cells, tenergy,
                tnorm_energy, tmeans, out, n, y, x):
    y0, x0 = oy + y * stride, ox + x * stride
    y1, x1 = y0 + kh, x0 + kw
    n_channels = integral.shape[1]
    wsum = 0.0
    if tmeans.shape[0] > 0:
        for c in range(n_channels):
            wsum += _box(integral, n, c, y0, y1, x0, x1)
    raw_only = code == CCORR or code == CCOEFF
    energy = 0.0
    inv_norm = 0.0
    if not raw_only:
        flat = _flat(magnitudes, n, cells)
        energy = _box(sqintegral, n, 0, y0, y1, x0, x1)
        if code == CCOEFF_NORMED:
            squares = 0.0
            for c in range(n_channels):
                s = _box(integral, n, c, y0, y1, x0, x1)
                squares += s * s
            inv_norm = _inverse_norm(energy, squares * (1.0 / (kh * kw)), flat)
        else:
            shift_energy = 0.0
            if code == SQDIFF_NORMED:
                area = kh * kw
                for c in range(n_channels):
                    shift = float64(float32(offsets[n, c]))
                    if shift != 0.0:
                        shift_energy += 2.0 * shift * _box(integral, n, c, y0, y1, x0, x1) + area * shift * shift
            inv_norm = _inverse_norm(energy + shift_energy, 0.0, flat)
    for m in range(out.shape[1]):
        corr = raw[n, m, y, x]
        if tmeans.shape[0] > 0:
            corr = float32(float64(corr) + tmeans[m] * wsum)
        if raw_only:
            out[n, m, y, x] = corr
        else:
            inv_tnorm = 1.0 / math.sqrt(tnorm_energy[m]) if tnorm_energy[m] > 0.0 else math.inf
            out[n, m, y, x] = _score(code, float64(corr), energy, inv_norm, inv_tnorm, tenergy[m])


@cuda.jit(cache=True)
def score_masked(raw, prefix, sqprefix, run_start, rows, starts, ends, weights, squares, member_start, members,
                 msums, msum2s, binaries, largest_square, tenergy, tnorm_energy, tsum, oy, ox, stride, code,
                 offsets, magnitudes, cells, out):
    """Scores of a masked group, window by window from its masks' runs (masked._mask_row's arithmetic).

    Grid z: frame x distinct mask; each thread sums its window's runs once
    and scores every template that shares the mask.
    """
    sets = msums.shape[0]
    n = cuda.blockIdx.z // sets
    s = cuda.blockIdx.z % sets
    x_start, y_start = cuda.grid(2)
    step_x, step_y = cuda.gridsize(2)
    for y in range(y_start, out.shape[2], step_y):
        for x in range(x_start, out.shape[3], step_x):
            _score_masked_at(raw, prefix, sqprefix, run_start, rows, starts, ends, weights, squares, member_start, members,
                msums, msum2s, binaries, largest_square, tenergy, tnorm_energy, tsum, oy, ox, stride, code, offsets,
                magnitudes, cells, out, n, s, y, x)


@cuda.jit(device=True, inline="always")
def _score_masked_at(raw, prefix, sqprefix, run_start, rows, starts, ends, weights, squares, member_start, members,
                 msums, msum2s, binaries, largest_square, tenergy, tnorm_energy, tsum, oy, ox, stride, code,
                 offsets, magnitudes, cells, out, n, s, y, x):
    n_channels = prefix.shape[1]
    zero_mean = code == CCOEFF or code == CCOEFF_NORMED
    restore = code == CCORR or code == CCORR_NORMED
    uncentre = code == SQDIFF_NORMED and offsets.shape[1] > 0
    binary = binaries[s]
    need_cross = (code == CCOEFF_NORMED or uncentre or restore) and not binary
    need_energy = code != CCORR and code != CCOEFF
    sums = cuda.local.array(MAX_CHANNELS, float64)
    cross = cuda.local.array(MAX_CHANNELS, float64)
    for c in range(MAX_CHANNELS):
        sums[c] = 0.0
        cross[c] = 0.0
    energy = 0.0
    yy, xx = oy + y * stride, ox + x * stride
    for r in range(run_start[s], run_start[s + 1]):
        a = xx + starts[r]
        b = xx + ends[r]
        line = yy + rows[r]
        for c in range(n_channels):
            run = prefix[n, c, line, b] - prefix[n, c, line, a]
            sums[c] += weights[r] * run
            if need_cross:
                cross[c] += squares[r] * run
        if need_energy:
            energy += squares[r] * (sqprefix[n, 0, line, b] - sqprefix[n, 0, line, a])
    msum, msum2 = msums[s], msum2s[s]
    inv_m = 1.0 / msum if msum > 0.0 else 0.0
    flat = _flat(magnitudes, n, cells) * largest_square[s]
    inv_norm = 0.0
    if code == CCOEFF_NORMED or uncentre:
        term = 0.0
        for c in range(n_channels):
            cross_c = cross[c] if need_cross else sums[c]
            if uncentre:
                shift = float64(float32(offsets[n, c]))
                term += 2.0 * shift * cross_c + shift * shift * msum2
            else:
                mean_c = sums[c] * inv_m
                term += 2.0 * mean_c * cross_c - mean_c * mean_c * msum2
        sign = 1.0 if uncentre else -1.0
        inv_norm = _inverse_norm(energy + sign * term, 0.0, flat)
    elif need_energy:
        inv_norm = _inverse_norm(energy, 0.0, flat)
    for i in range(member_start[s], member_start[s + 1]):
        k = members[i]
        corr = float64(raw[n, k, y, x])
        if zero_mean:
            for c in range(n_channels):
                factor = tsum[k, c] * inv_m
                if factor != 0.0:
                    corr -= sums[c] * factor
        elif restore:
            for c in range(n_channels):
                corr += (cross[c] if need_cross else sums[c]) * tsum[k, c]
        if need_energy:
            inv_tnorm = 1.0 / math.sqrt(tnorm_energy[k]) if tnorm_energy[k] > 0.0 else math.inf
            out[n, k, y, x] = _score(code, corr, energy, inv_norm, inv_tnorm, tenergy[k])
        else:
            out[n, k, y, x] = corr


@cuda.jit(cache=True)
def score_ssim(raw, integral, sqintegral, index, oy, ox, stride, kh, kw, tmeans, tvars, c1, c2, out):
    """SSIM of each template at each window, the mean over channels (scores.finish_ssim, per window)."""
    n = cuda.blockIdx.z
    x_start, y_start = cuda.grid(2)
    step_x, step_y = cuda.gridsize(2)
    for y in range(y_start, out.shape[2], step_y):
        for x in range(x_start, out.shape[3], step_x):
            _score_ssim_at(raw, integral, sqintegral, index, oy, ox, stride, kh, kw, tmeans, tvars, c1, c2, out, n, y, x)


@cuda.jit(device=True, inline="always")
def _score_ssim_at(raw, integral, sqintegral, index, oy, ox, stride, kh, kw, tmeans, tvars, c1, c2, out, n, y, x):
    y0, x0 = oy + y * stride, ox + x * stride
    y1, x1 = y0 + kh, x0 + kw
    n_channels = integral.shape[1]
    area = kh * kw
    inv_n = 1.0 / area
    inv_n1 = 1.0 / (area - 1) if area > 1 else 0.0
    means = cuda.local.array(MAX_CHANNELS, float64)
    variances = cuda.local.array(MAX_CHANNELS, float64)
    for c in range(n_channels):
        s = _box(integral, n, c, y0, y1, x0, x1)
        variances[c] = max(_box(sqintegral, n, c, y0, y1, x0, x1) - s * s * inv_n, 0.0) * inv_n1
        means[c] = s * inv_n
    for k in range(out.shape[1]):
        acc = 0.0
        for c in range(n_channels):
            cov = float64(raw[n, index[k, c], y, x]) * inv_n1
            acc += _ssim(means[c], tmeans[k, c], variances[c], tvars[k, c], cov, c1, c2)
        out[n, k, y, x] = min(1.0, max(-1.0, acc / n_channels))


#: Up to this many peaks a map, the rounds go by :func:`partial_peaks` and
#: :func:`pick_peaks` (two launches a round, many blocks a map: a VGA map is
#: 300,000 values, too many for one block to scan quickly); beyond, one
#: launch of :func:`top_peaks` does every round.
FEW_PEAKS = 8
#: Values each thread of partial_peaks scans, at least (sets its blocks per map).
PEAK_VALUES_PER_THREAD = 16


def peak_blocks(size: int) -> int:
    """Blocks per map of :func:`partial_peaks` for maps of ``size`` values."""
    return blocks(size, PEAK_THREADS * PEAK_VALUES_PER_THREAD, min(MAX_GRID, PEAK_THREADS))


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
