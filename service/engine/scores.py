"""From raw correlations to the six methods' scores.

The correlation paths (direct, spectral) compute sums of kernel x window; this
module adds the window statistics and applies OpenCV's formulas. All of it in
float64, per output position, O(1) each.

Degenerate windows and templates (the convention, as in OpenCV): for the
normalised methods the denominator ``t`` is treated as 0 when the window's
energy (its variance, for ccoeff_normed) is within rounding of zero, or when
the template's is. Then, and whenever rounding pushes |numerator| past ``t``:
|num| < t gives num / t; |num| < 1.125 t gives +-1; otherwise the result is
0 for ccorr_normed and ccoeff_normed ("no evidence") and 1 for sqdiff_normed
("no match"). So a flat template or a flat window scores 0 under
ccoeff_normed, never NaN. sqdiff is clamped at 0.
"""

import numpy as np
from numba import njit, prange

from .runtime import JIT

SQDIFF, SQDIFF_NORMED, CCORR, CCORR_NORMED, CCOEFF, CCOEFF_NORMED = range(6)

# A variance below this fraction of the window's energy is rounding noise:
# float32 products carry ~1e-7 relative error.
_FLAT = 1e-6


@njit(inline="always", **JIT)
def score(method, corr, energy, mean2, tenergy):
    """Score of one window.

    Parameters
    ----------
    corr : float
        Sum of the method's template kernel times the window.
    energy : float
        Sum of squares of the (masked) window, all channels.
    mean2 : float
        The part of ``energy`` that is the window's mean (ccoeff pair only).
    tenergy : float
        Sum of squares of the template kernel (zero-mean for the ccoeff pair).
    """
    if method == CCORR or method == CCOEFF:
        return corr
    num = corr
    if method <= SQDIFF_NORMED:
        num = max(energy - 2.0 * corr + tenergy, 0.0)
        if method == SQDIFF:
            return num
    var = max(energy - mean2, 0.0)
    t = 0.0
    if var > _FLAT * energy and tenergy > 0.0:
        t = np.sqrt(var) * np.sqrt(tenergy)
    if abs(num) < t:
        return num / t
    if abs(num) < t * 1.125:
        return 1.0 if num > 0 else -1.0
    return 1.0 if method == SQDIFF_NORMED else 0.0


@njit(parallel=True, **JIT)
def finish_plain(raw, n_templates, sums, sqsum, oy, ox, stride, kh, kw, tenergy, method, out):
    """Scores of unmasked templates of one size from their raw correlations.

    ``raw`` and ``out`` are (K, Ho, Wo) and may be the same array; the window
    statistics come from the integral images ``sums`` and ``sqsum``.
    """
    height, width = out.shape[1], out.shape[2]
    n_planes = sums.shape[0]
    inv_area = 1.0 / (kh * kw)
    need_energy = method != CCORR and method != CCOEFF
    need_mean = method == CCOEFF_NORMED
    for y in prange(height):
        y0 = oy + y * stride
        y1 = y0 + kh
        for x in range(width):
            x0 = ox + x * stride
            x1 = x0 + kw
            energy = 0.0
            mean2 = 0.0
            if need_energy:
                energy = sqsum[y1, x1] - sqsum[y0, x1] - sqsum[y1, x0] + sqsum[y0, x0]
            if need_mean:
                for c in range(n_planes):
                    s = sums[c, y1, x1] - sums[c, y0, x1] - sums[c, y1, x0] + sums[c, y0, x0]
                    mean2 += s * s
                mean2 *= inv_area
            for k in range(n_templates):
                out[k, y, x] = score(method, np.float64(raw[k, y, x]), energy, mean2, tenergy[k])


@njit(parallel=True, **JIT)
def finish_masked(maps, first, n_channels, tenergy, tsum, msum, msum2, method, out):
    """Scores of one masked template from its correlation maps.

    ``maps[first:]`` holds, in order: the numerator (template kernel on the
    frame); for the ccoeff pair, the frame's masked sums per channel (kernel
    M on channel c) and, for ccoeff_normed, the cross terms per channel
    (kernel M^2 on channel c); then the masked energy (kernel M^2 on the
    squared planes), for every method that needs it.

    ``tsum`` holds sum(M^2 T'_c) per channel for the ccoeff pair, ``msum`` is
    sum(M) and ``msum2`` sum(M^2).
    """
    height, width = out.shape
    zero_mean = method == CCOEFF or method == CCOEFF_NORMED
    n_mean = n_channels if zero_mean else 0
    n_cross = n_channels if method == CCOEFF_NORMED else 0
    has_energy = method != CCORR and method != CCOEFF
    e_index = first + 1 + n_mean + n_cross
    inv_m = 1.0 / msum if msum > 0.0 else 0.0
    for y in prange(height):
        for x in range(width):
            corr = np.float64(maps[first, y, x])
            mean2 = 0.0
            for c in range(n_mean):
                mean_c = maps[first + 1 + c, y, x] * inv_m
                corr -= mean_c * tsum[c]
                if n_cross:
                    cross = np.float64(maps[first + 1 + n_mean + c, y, x])
                    mean2 += 2.0 * mean_c * cross - mean_c * mean_c * msum2
            energy = np.float64(maps[e_index, y, x]) if has_energy else 0.0
            out[y, x] = score(method, corr, energy, mean2, tenergy)
