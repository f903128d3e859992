"""From raw correlations to the methods' scores (OpenCV's six and ssim's finishing step).

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

import math

import numpy as np
from numba import njit, prange

from .runtime import JIT

# The methods' codes, defined here once: OpenCV's numbers (TM_SQDIFF = 0 ...)
# for OpenCV's six, then ssim. Nothing depends on their order.
SQDIFF, SQDIFF_NORMED, CCORR, CCORR_NORMED, CCOEFF, CCOEFF_NORMED, SSIM = range(7)

#: Windows take their statistics from float64 integral images (masked ones:
#: row prefix sums) of the frame's planes, whose differences are exact to within a few units of
#: float64 rounding of the largest sum they hold (pixels x planes x M^2, M
#: the largest magnitude in the planes). A window's variance within this many
#: such units of zero is flat; any real variance, however dark or bright the
#: window, is far above it (see flat_tolerance).
FLAT_ROUNDING_UNITS = 16.0


def flat_tolerance(planes: np.ndarray) -> float:
    """The variance (sum over a window) at or below which a window of these planes counts as flat.

    Tied to the data's magnitude and to the precision of the integral images,
    never to the frame's mean or to the window's energy: a near-black or
    near-white window with real variance is scored, not judged flat.
    """
    magnitude = max(-float(planes.min()), float(planes.max())) if planes.size else 0.0  # no |planes| temporary
    return FLAT_ROUNDING_UNITS * np.finfo(np.float64).eps * planes.size * magnitude * magnitude


def inverse_norm_formula(energy, mean2, flat):
    """1 / sqrt of the window's (co)variance term; inf when it is at most ``flat`` (within rounding of 0).

    An infinite inverse norm sends :func:`score` to the degenerate value
    without a test on every template. Plain Python, compiled twice from this
    one source: for the CPU (:func:`inverse_norm`) and for the GPU (cuda.kernels).
    """
    var = energy - mean2
    return 1.0 / math.sqrt(var) if var > flat else math.inf


def score_formula(method, corr, energy, inv_norm, inv_tnorm, tenergy):
    """Score of one window (compiled for the CPU as :func:`score`, and for the GPU).

    Parameters
    ----------
    corr : float
        Sum of the method's template kernel times the window.
    energy : float
        Sum of squares of the (masked) window, all channels.
    inv_norm : float
        :func:`inverse_norm` of the window.
    inv_tnorm, tenergy : float
        Inverse norm (inf when 0) and sum of squares of the template kernel
        (zero-mean for the ccoeff pair).
    """
    if method == CCORR or method == CCOEFF:
        return corr
    num = corr
    if method == SQDIFF or method == SQDIFF_NORMED:
        num = max(energy - 2.0 * corr + tenergy, 0.0)
        if method == SQDIFF:
            return num
    # OpenCV's rule on r = num / t; a zero denominator gives inf or NaN
    # here, and both fall through to the degenerate value.
    r = num * inv_norm * inv_tnorm
    a = abs(r)
    fallback = 1.0 if method == SQDIFF_NORMED else 0.0
    clamped = (1.0 if r > 0.0 else -1.0) if a < 1.125 else fallback
    return r if a < 1.0 else clamped


def ssim_formula(mx, my, vx, vy, cov, c1, c2):
    """One channel's SSIM of a window (means, sample variances, covariance; compiled for CPU and GPU)."""
    return ((2.0 * mx * my + c1) * (2.0 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


inverse_norm = njit(inline="always", error_model="numpy", **JIT)(inverse_norm_formula)
score = njit(inline="always", error_model="numpy", **JIT)(score_formula)
ssim_term = njit(inline="always", error_model="numpy", **JIT)(ssim_formula)


@njit(error_model="numpy", **JIT)
def _box(top_right, top_left, bottom_right, bottom_left, out, accumulate_square):
    """Window sums from four integral-image row views: set, or add their squares."""
    for x in range(out.shape[0]):
        s = bottom_right[x] - top_right[x] - bottom_left[x] + top_left[x]
        if accumulate_square:
            out[x] += s * s
        else:
            out[x] = s


@njit(error_model="numpy", **JIT)
def _box_row(table, y0, y1, ox, kw, stride, out, accumulate_square):
    width = out.shape[0]
    if stride == 1:
        # Contiguous views: the loop in _box vectorises.
        _box(table[y0, ox + kw: ox + kw + width], table[y0, ox: ox + width],
             table[y1, ox + kw: ox + kw + width], table[y1, ox: ox + width], out, accumulate_square)
    else:
        span = (width - 1) * stride + 1
        _box(table[y0, ox + kw: ox + kw + span: stride], table[y0, ox: ox + span: stride],
             table[y1, ox + kw: ox + kw + span: stride], table[y1, ox: ox + span: stride], out,
             accumulate_square)


@njit(error_model="numpy", **JIT)
def window_row(sums, sqsum, y0, kh, ox, kw, stride, need_mean, flat, offsets, energy, inv_norm):
    """Energy and inverse norm of one row of windows (top row ``y0``, first left column ``ox``).

    ``flat`` is :func:`flat_tolerance` of the planes the integral images were
    made from. ``offsets`` (one per channel) is what was taken off the
    planes before (sqdiff_normed): the energy stays the centred one, for the
    numerator, while the norm is the energy of the window as it was,
    sum (I' + c)^2 = energy + sum_c (2 c S_c + n c^2); zeros otherwise.
    """
    y1 = y0 + kh
    _box_row(sqsum, y0, y1, ox, kw, stride, energy, False)
    inv_norm[:] = 0.0  # holds the squared window sums (or the uncentring terms) until the last loop
    n = kh * kw
    if need_mean:
        for c in range(sums.shape[0]):
            _box_row(sums[c], y0, y1, ox, kw, stride, inv_norm, True)
        inv_area = 1.0 / n
        for x in range(energy.shape[0]):
            inv_norm[x] = inverse_norm(energy[x], inv_norm[x] * inv_area, flat)
        return
    if offsets.shape[0] and offsets.any():
        window = np.empty(energy.shape[0])
        for c in range(sums.shape[0]):
            _box_row(sums[c], y0, y1, ox, kw, stride, window, False)
            shift = offsets[c]
            for x in range(energy.shape[0]):
                inv_norm[x] += 2.0 * shift * window[x] + n * shift * shift
    for x in range(energy.shape[0]):
        inv_norm[x] = inverse_norm(energy[x] + inv_norm[x], 0.0, flat)


@njit(error_model="numpy", **JIT)
def window_sums(sums, y0, kh, ox, kw, stride, out):
    """The sum over every channel of a row of windows (top row ``y0``): out (Wo,)."""
    _box_row(sums[0], y0, y0 + kh, ox, kw, stride, out, False)
    if sums.shape[0] > 1:
        channel = np.empty(out.shape[0])
        for c in range(1, sums.shape[0]):
            _box_row(sums[c], y0, y0 + kh, ox, kw, stride, channel, False)
            for x in range(out.shape[0]):
                out[x] += channel[x]


@njit(parallel=True, error_model="numpy", **JIT)
def window_sums_map(sums, oy, ox, stride, kh, kw, out):
    """:func:`window_sums` for every row of windows: out (Ho, Wo)."""
    for y in prange(out.shape[0]):
        window_sums(sums, oy + y * stride, kh, ox, kw, stride, out[y])


@njit(error_model="numpy", **JIT)
def add_means(corr, mean, wsums):
    """corr += mean * wsums, in float64, rounded once; ``corr`` float32, a row or a map.

    Restores a correlation computed with a kernel less its mean (the ccorr
    pair): sum T I = sum (T - mean) I + mean * sum_window I.
    """
    flat, window = corr.reshape(-1), wsums.reshape(-1)
    for x in range(flat.shape[0]):
        flat[x] = np.float64(flat[x]) + mean * window[x]


@njit(parallel=True, error_model="numpy", **JIT)
def window_stats(sums, sqsum, oy, ox, stride, kh, kw, need_mean, flat, offsets, energy, inv_norm):
    """Fill (Ho, Wo) arrays with every window's energy and inverse norm (see :func:`window_row`)."""
    for y in prange(energy.shape[0]):
        window_row(sums, sqsum, oy + y * stride, kh, ox, kw, stride, need_mean, flat, offsets, energy[y],
                   inv_norm[y])


@njit(error_model="numpy", **JIT)
def row_scores(method, row_in, row_out, energy, inv_norm, inv_tnorm, tenergy):
    """Scores of one row of windows from their correlations and statistics."""
    # One loop per method family, so that each vectorises with no test on
    # the method inside.
    if method == SQDIFF:
        for x in range(row_in.shape[0]):
            row_out[x] = score(SQDIFF, np.float64(row_in[x]), energy[x], 0.0, 0.0, tenergy)
    elif method == SQDIFF_NORMED:
        for x in range(row_in.shape[0]):
            row_out[x] = score(SQDIFF_NORMED, np.float64(row_in[x]), energy[x], inv_norm[x], inv_tnorm, tenergy)
    else:
        for x in range(row_in.shape[0]):
            row_out[x] = score(CCOEFF_NORMED, np.float64(row_in[x]), 0.0, inv_norm[x], inv_tnorm, tenergy)


@njit(error_model="numpy", **JIT)
def map_scores(method, raw, energy, inv_norm, tenergy, tnorm_energy, out):
    """Scores of one template's map (serial: the caller runs templates in parallel).

    ``tnorm_energy`` is the template's energy for the norm: ``tenergy`` but
    for sqdiff_normed on offset planes, where it is the uncentred one.
    """
    inv_tnorm = 1.0 / np.sqrt(tnorm_energy) if tnorm_energy > 0.0 else np.inf
    for y in range(out.shape[0]):
        row_scores(method, raw[y], out[y], energy[y], inv_norm[y], inv_tnorm, tenergy)


@njit(error_model="numpy", **JIT)
def _ssim_row(cov_row, mx, vx, my, vy, c1, c2, inv_n1, acc):
    """Add one channel's SSIM of one template along a row of windows to ``acc``."""
    for x in range(acc.shape[0]):
        acc[x] += ssim_term(mx[x], my, vx[x], vy, np.float64(cov_row[x]) * inv_n1, c1, c2)


@njit(parallel=True, error_model="numpy", **JIT)
def finish_ssim(raw, index, sums, sqsums, oy, ox, stride, kh, kw, tmeans, tvars, c1, c2, out):
    """SSIM of each template at each window, the mean over channels.

    ``raw[index[k, c]]`` is the correlation of template k's zero-mean channel
    c with channel c of the frame, i.e. n - 1 times the sample covariance;
    window means and variances come from per-channel integral images
    ``sums`` and ``sqsums``, a row at a time, shared by every template.
    Sample (n - 1) statistics throughout, as scikit-image's
    ``use_sample_covariance``. The denominator is at least c1 * c2 > 0: never
    NaN.
    """
    n_templates, height, width = out.shape
    n_channels = sums.shape[0]
    n = kh * kw
    inv_n = 1.0 / n
    inv_n1 = 1.0 / (n - 1) if n > 1 else 0.0
    for y in prange(height):
        y0 = oy + y * stride
        means = np.empty((n_channels, width))
        variances = np.empty((n_channels, width))
        for c in range(n_channels):
            _box_row(sums[c], y0, y0 + kh, ox, kw, stride, means[c], False)
            _box_row(sqsums[c], y0, y0 + kh, ox, kw, stride, variances[c], False)
            for x in range(width):
                s = means[c, x]
                variances[c, x] = max(variances[c, x] - s * s * inv_n, 0.0) * inv_n1
                means[c, x] = s * inv_n
        acc = np.empty(width)
        for k in range(n_templates):
            acc[:] = 0.0
            for c in range(n_channels):
                _ssim_row(raw[index[k, c], y], means[c], variances[c], tmeans[k, c], tvars[k, c], c1, c2, inv_n1, acc)
            row = out[k, y]
            for x in range(width):
                row[x] = min(1.0, max(-1.0, acc[x] / n_channels))
