"""The scoring kernels on the GPU: the CPU path's formulas (scores.py) over the raw correlations."""

import math

import numpy as np
from numba import cuda, float32, float64

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
from .launch import MAX_CHANNELS

_EPS = float(np.finfo(np.float64).eps)

_inverse_norm = cuda.jit(device=True, inline="always")(inverse_norm_formula)
_score = cuda.jit(device=True, inline="always")(score_formula)
_ssim = cuda.jit(device=True, inline="always")(ssim_formula)


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


# Long (62 lines) as the CPU's masked._mask_row is, for the same reason: one pass over a mask's runs
# keeps every running sum in registers.
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
