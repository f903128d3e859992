"""How the GPU kernels are launched: block shapes, grid limits, tiles (plain Python; no numba-cuda needed)."""

import os

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
