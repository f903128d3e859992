"""The GPU path's kernels (numba-cuda), in the order a batch runs them: the CPU path's maps, computed on the device.

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

# The kernels live in rooms by stage; this module names them in one place for the CUDA matcher.
from .correlate import correlate, correlate_wide
from .launch import (
    FEW_PEAKS,
    KT,
    LINE_ROWS,
    LINE_THREADS,
    MAX_GRID_Y,
    PEAK_THREADS,
    PX,
    PY,
    RX,
    SIMULATED,
    TX,
    TY,
    COLUMN_THREADS,
    blocks,
    peak_blocks,
    tile_floats,
    tile_rows,
)
from .peaks import partial_peaks, pick_peaks, top_peaks
from .planes import channel_sums, column_prefix, make_planes, row_prefix
from .scoring import score_masked, score_plain, score_ssim

__all__ = [
    "COLUMN_THREADS",
    "FEW_PEAKS",
    "KT",
    "LINE_ROWS",
    "LINE_THREADS",
    "MAX_GRID_Y",
    "PEAK_THREADS",
    "PX",
    "PY",
    "RX",
    "SIMULATED",
    "TX",
    "TY",
    "blocks",
    "channel_sums",
    "column_prefix",
    "correlate",
    "correlate_wide",
    "make_planes",
    "partial_peaks",
    "peak_blocks",
    "pick_peaks",
    "row_prefix",
    "score_masked",
    "score_plain",
    "score_ssim",
    "tile_floats",
    "tile_rows",
    "top_peaks",
]
