"""Pose search's scoring kernels: a variant's scores over a small window, the top grid's reduction, the fits."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..runtime import FASTMATH, JIT

# Window scores with less work than this (positions x variant pixels) run on the calling thread.
_PARALLEL_WORK = 1 << 18


# Long by design (95 lines, a third of them its docstring): one compiled pass over the variant's rows
# fills every array the window kernels read, so that a variant is read once.
@njit(error_model="numpy", fastmath=FASTMATH, **JIT)
def _prepare_scores(template, weights, method):
    """A variant's side of :func:`_score_at`: its masked (centred) values and its weights as (h, w C) rows,
    the mask's row spans, its weight and its energy.

    ``template`` (h, w C) float32 rows and ``weights`` (h, w), C-contiguous:
    each pass runs along contiguous rows and vectorises (a 762x521 variant's
    preparation took 4x its nine scores when it ran pixel by pixel).
    """
    h, w = weights.shape
    n_channels = template.shape[1] // w
    # Each row's span of non-zero weights (one run for a rotated box): the
    # sums run over spans, without a test per pixel.
    first = np.full(h, w, np.int64)
    last = np.zeros(h, np.int64)
    for i in range(h):
        for j in range(w):
            if weights[i, j] != 0.0:
                first[i] = j
                break
        for j in range(w - 1, first[i] - 1, -1):
            if weights[i, j] != 0.0:
                last[i] = j + 1
                break
    if n_channels == 1:
        masks = weights  # (float32 0/1: the rows' own weights)
    else:
        masks = np.empty((h, w * n_channels), np.float32)
        for i in range(h):
            row = weights[i]
            out = masks[i]
            for j in range(w):
                for c in range(n_channels):
                    out[j * n_channels + c] = row[j]
    msum = 0.0
    tmean = np.zeros(n_channels)
    for i in range(h):
        values = template[i]
        mask = masks[i]
        if n_channels == 1:
            total, weight = 0.0, 0.0
            for j in range(w):
                weight += mask[j]
                total += mask[j] * values[j]
            msum += weight
            tmean[0] += total
        elif n_channels == 3:  # three sums, interleaved loads: vectorises
            weight, t0, t1, t2 = 0.0, 0.0, 0.0, 0.0
            for j in range(w):
                m = np.float64(mask[3 * j])
                weight += m
                t0 += m * values[3 * j]
                t1 += m * values[3 * j + 1]
                t2 += m * values[3 * j + 2]
            msum += weight
            tmean[0] += t0
            tmean[1] += t1
            tmean[2] += t2
        else:
            for j in range(w):
                msum += mask[j * n_channels]
            for j in range(w * n_channels):
                tmean[j % n_channels] += mask[j] * values[j]
    for c in range(n_channels):
        tmean[c] = tmean[c] / msum if msum > 0.0 and method == 0 else 0.0  # ccoeff_normed centres
    rows = np.empty((h, w * n_channels))
    tenergy = 0.0
    for i in range(h):
        values = template[i]
        mask = masks[i]
        out = rows[i]
        if n_channels == 1:
            centre, energy = tmean[0], 0.0
            for j in range(w):
                v = np.float64(values[j]) - centre
                out[j] = v * mask[j]
                energy += mask[j] * v * v
            tenergy += energy
        elif n_channels == 3:
            c0, c1, c2, energy = tmean[0], tmean[1], tmean[2], 0.0
            for j in range(w):
                m = np.float64(mask[3 * j])
                v0 = np.float64(values[3 * j]) - c0
                v1 = np.float64(values[3 * j + 1]) - c1
                v2 = np.float64(values[3 * j + 2]) - c2
                out[3 * j] = v0 * m
                out[3 * j + 1] = v1 * m
                out[3 * j + 2] = v2 * m
                energy += m * (v0 * v0 + v1 * v1 + v2 * v2)
            tenergy += energy
        else:
            for j in range(w * n_channels):
                v = np.float64(values[j]) - tmean[j % n_channels]
                out[j] = v * mask[j]
                tenergy += mask[j] * v * v
    return rows, masks, first, last, msum, tenergy


@njit(error_model="numpy", fastmath=FASTMATH, **JIT)
def _similarity(cross, energy, tenergy, sums, n_channels, msum, method):
    """A window's score from its sums: the cross term, its energy, the variant's energy, and (ccoeff_normed)
    the window's per-channel sums, whose mean comes off its energy. Flat windows score 0 (1 as a distance)."""
    if method == 0:
        for c in range(n_channels):
            energy -= sums[c] * sums[c] / msum if msum > 0.0 else 0.0
    denominator = math.sqrt(max(energy, 0.0) * tenergy)
    if method == 2:
        distance = energy - 2.0 * cross + tenergy
        return 1.0 - (max(distance, 0.0) / denominator if denominator > 0.0 else 1.0)
    return min(max(cross / denominator, -1.0), 1.0) if denominator > 0.0 else 0.0


@njit(error_model="numpy", fastmath=FASTMATH, **JIT)
def _score_at(image, n_channels, rows, masks, first, last, msum, tenergy, method, y, x, sums):
    """The score of the variant with its top-left corner at (y, x) of ``image``.

    ``image`` is the level as (H, W C) rows, C-contiguous: each of the
    variant's row spans is then one contiguous slice of it and of ``rows`` and
    ``masks`` (:func:`_prepare_scores`), and the loop over it vectorises (over
    a strided view, or with indices Numba cannot prove non-negative, it ran
    scalar: 0.6 of 4.4 GMAC/s). ``sums`` (C,) is scratch.
    """
    cross = 0.0
    energy = 0.0
    for c in range(n_channels):
        sums[c] = 0.0
    for i in range(rows.shape[0]):
        a, b = first[i] * n_channels, last[i] * n_channels
        if a >= b:
            continue
        values = image[y + i, x * n_channels + a:x * n_channels + b]
        kernel = rows[i, a:b]
        mask = masks[i, a:b]
        total = 0.0
        for j in range(b - a):
            v = np.float64(values[j])
            weighted = mask[j] * v
            cross += kernel[j] * v
            energy += weighted * v
            total += weighted
        if n_channels == 1:
            sums[0] += total
        elif method == 0 and n_channels == 3:  # each channel's sum: its own mean comes off
            s0, s1, s2 = 0.0, 0.0, 0.0
            for j in range((b - a) // 3):
                m = np.float64(mask[3 * j])
                s0 += m * values[3 * j]
                s1 += m * values[3 * j + 1]
                s2 += m * values[3 * j + 2]
            sums[0] += s0
            sums[1] += s1
            sums[2] += s2
        elif method == 0:
            for j in range(b - a):
                sums[j % n_channels] += mask[j] * values[j]
    return _similarity(cross, energy, tenergy, sums, n_channels, msum, method)


@njit(parallel=True, error_model="numpy", **JIT)
def _window_scores(image, n_channels, y0, x0, template, weights, method, out):
    """Scores of one variant at every position of a small window, in float64.

    ``image`` (H, W C) float32 rows hold the level; position (i, j) puts the
    variant's top-left corner at (y0 + i, x0 + j), every position inside.
    ``template`` (h, w C) float32 rows are the variant, ``weights`` (h, w) its 0/1 mask;
    ``out`` (n, m). The same formulas as the Matcher's (OpenCV's masked
    ones); flat windows score 0 (ccoeff_normed, ccorr_normed) or 1
    (sqdiff_normed's distance).
    """
    rows, masks, first, last, msum, tenergy = _prepare_scores(template, weights, method)
    nx = out.shape[1]
    for p in prange(out.size):
        sums = np.empty(n_channels)
        out[p // nx, p % nx] = _score_at(image, n_channels, rows, masks, first, last, msum, tenergy, method,
                                         y0 + p // nx, x0 + p % nx, sums)


@njit(error_model="numpy", **JIT)
def _window_scores_serial(image, n_channels, y0, x0, template, weights, method, out):
    """:func:`_window_scores` on the calling thread: for small windows a parallel launch costs more than it saves."""
    rows, masks, first, last, msum, tenergy = _prepare_scores(template, weights, method)
    sums = np.empty(n_channels)
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            out[y, x] = _score_at(image, n_channels, rows, masks, first, last, msum, tenergy, method, y0 + y, x0 + x,
                                  sums)


@njit(error_model="numpy", fastmath=FASTMATH, **JIT)
def _cut_score(image, n_channels, rows, masks, first, last, prefix_m, prefix_t, method, top, left, r0, r1, c0, c1,
               min_weight, mean, sums):
    """The score of the variant at (top, left) of ``image`` on its rows r0:r1 and columns c0:c1 alone.

    As :func:`_score_at` scores the variant cut to those pixels (the mask,
    the template's mean and energy over them alone), in one pass over them:
    the cut's weight and mean come from the rows' prefix sums ``prefix_m``
    (h, w + 1) and ``prefix_t`` (h, w + 1, C) of the uncentred template;
    ``mean`` and ``sums`` (C,) are scratch. A window along the frame's edge
    has a different cut at each position: preparing each as a variant of its
    own took three quarters of a clipped search's time. -inf where the cut's
    weight is under ``min_weight``.
    """
    msum = 0.0
    for c in range(n_channels):
        mean[c] = 0.0
        sums[c] = 0.0
    for i in range(r0, r1):
        msum += prefix_m[i, c1] - prefix_m[i, c0]
        for c in range(n_channels):
            mean[c] += prefix_t[i, c1, c] - prefix_t[i, c0, c]
    if msum <= 0.0 or msum < min_weight:
        return -np.inf
    for c in range(n_channels):
        mean[c] = mean[c] / msum if method == 0 else 0.0  # the cut's own mean (ccoeff_normed centres)
    cross = 0.0
    energy = 0.0
    tenergy = 0.0
    for i in range(r0, r1):
        a, b = max(first[i], c0), min(last[i], c1)
        if a >= b:
            continue
        values = image[top + i, (left + a) * n_channels:(left + b) * n_channels]
        kernel = rows[i, a * n_channels:b * n_channels]  # the uncentred template times its mask
        mask = masks[i, a * n_channels:b * n_channels]
        if n_channels == 1:  # one mean, one sum: the loop vectorises
            centre, total = mean[0], 0.0
            for j in range(b - a):
                m = mask[j]
                t = kernel[j] - m * centre
                v = np.float64(values[j])
                cross += t * v
                energy += m * v * v
                tenergy += t * t
                total += m * v
            sums[0] += total
            continue
        for j in range(b * n_channels - a * n_channels):
            m = mask[j]
            t = kernel[j] - m * mean[j % n_channels]
            v = np.float64(values[j])
            cross += t * v
            energy += m * v * v
            tenergy += t * t
            sums[j % n_channels] += m * v
    return _similarity(cross, energy, tenergy, sums, n_channels, msum, method)


@njit(error_model="numpy", **JIT)
def _clipped_scores(image, n_channels, template, weights, method, y0, x0, min_visible, out):
    """:func:`clipped_scores` on (H, W C) rows of the image and (h, w C) rows of the variant."""
    # Positions whose variant lies whole in the image share one preparation (most of a window's).
    rows, masks, first, last, msum_all, tenergy_all = _prepare_scores(template, weights, method)
    plain, prefix_m, prefix_t = _cut_parts(template, weights, method, rows)
    _clipped_window(image, n_channels, rows, plain, masks, first, last, msum_all, tenergy_all, prefix_m, prefix_t,
                    method, y0, x0, min_visible, out)


@njit(error_model="numpy", **JIT)
def _cut_parts(template, weights, method, rows):
    """What :func:`_cut_score` reads of a variant besides :func:`_prepare_scores`'s ``rows``: its uncentred
    rows (``rows`` themselves but for ccoeff_normed) and its rows' prefix sums (h, w + 1) and (h, w + 1, C).
    Apart, so that the windows of one variant at many places share them (:func:`~.batch.batch_scores`)."""
    h, w = weights.shape
    n_channels = template.shape[1] // w
    # Each cut centres on its own mean: the uncentred rows (ccoeff_normed's own are centred on the whole's).
    plain = _prepare_scores(template, weights, 1)[0] if method == 0 else rows
    prefix_m = np.zeros((h, w + 1))
    prefix_t = np.zeros((h, w + 1, n_channels))
    for i in range(h):
        for j in range(w):
            m = np.float64(weights[i, j])
            prefix_m[i, j + 1] = prefix_m[i, j] + m
            for c in range(n_channels):
                prefix_t[i, j + 1, c] = prefix_t[i, j, c] + m * template[i, j * n_channels + c]
    return plain, prefix_m, prefix_t


@njit(error_model="numpy", **JIT)
def _clipped_window(image, n_channels, rows, plain, masks, first, last, msum_all, tenergy_all, prefix_m, prefix_t,
                    method, y0, x0, min_visible, out):
    """:func:`_clipped_scores`'s window over a prepared variant (:func:`_prepare_scores`, :func:`_cut_parts`)."""
    height, width = image.shape[0], image.shape[1] // n_channels
    h, w = prefix_m.shape[0], prefix_m.shape[1] - 1
    total = prefix_m[:, w].sum()
    mean = np.empty(n_channels)
    sums = np.empty(n_channels)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = -np.inf
            top, left = y0 + i, x0 + j
            r0, r1 = max(0, -top), min(h, height - top)
            c0, c1 = max(0, -left), min(w, width - left)
            if r0 >= r1 or c0 >= c1 or total <= 0.0:
                continue
            if r0 == 0 and c0 == 0 and r1 == h and c1 == w:
                out[i, j] = _score_at(image, n_channels, rows, masks, first, last, msum_all, tenergy_all, method,
                                      top, left, sums)
            else:
                out[i, j] = _cut_score(image, n_channels, plain, masks, first, last, prefix_m, prefix_t, method, top,
                                       left, r0, r1, c0, c1, min_visible * total, mean, sums)


def _weights(weights: np.ndarray) -> np.ndarray:
    """A variant's 0/1 mask as the kernels take it: float32, C-contiguous (a view where it already is)."""
    return np.ascontiguousarray(weights, np.float32)


def _rows(image: np.ndarray) -> np.ndarray:
    """An (H, W, C) level as (H, W C) C-contiguous rows (a view of a contiguous level)."""
    return np.ascontiguousarray(image).reshape(image.shape[0], -1)


def clipped_scores(image: np.ndarray, template: np.ndarray, weights: np.ndarray, method: int, y0: int, x0: int,
                   min_visible: float, out: np.ndarray) -> None:
    """Scores of one variant at positions that may reach past the image's edge, each on its visible part.

    Position (i, j) puts the variant's top-left corner at (y0 + i, x0 + j) of
    ``image`` (H, W, C) float32. Each is scored as :func:`window_scores`
    would score the variant cut to the pixels inside the image (its mask,
    mean and energy over those alone), and is -inf where under
    ``min_visible`` of the mask's weight is inside.
    """
    _clipped_scores(_rows(image), image.shape[2], _rows(template), _weights(weights), method, y0, x0, min_visible, out)



def parabola(left: float, centre: float, right: float) -> float:
    """Offset in [-1, 1] steps of the vertex of the parabola through three equally spaced scores.

    Past half a step the vertex lies beyond the samples: the move is capped at
    one step and the next round samples around the new place.
    """
    curvature = left - 2.0 * centre + right
    if curvature >= 0.0:  # not a maximum: towards the better side
        return 0.0 if left == right else (1.0 if right > left else -1.0)
    return float(np.clip(0.5 * (left - right) / curvature, -1.0, 1.0))


def quadric_peak(scores: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, value) of the maximum of the quadric fitted to 3x3 ``scores`` around its centre."""
    s = scores.astype(np.float64)
    dx = (s[:, 2] - s[:, 0]).sum() / 6.0
    dy = (s[2, :] - s[0, :]).sum() / 6.0
    dxx = (s[:, 0] - 2.0 * s[:, 1] + s[:, 2]).sum() / 3.0
    dyy = (s[0, :] - 2.0 * s[1, :] + s[2, :]).sum() / 3.0
    dxy = (s[2, 2] - s[2, 0] - s[0, 2] + s[0, 0]) / 4.0
    det = dxx * dyy - dxy * dxy
    if dxx >= 0.0 or det <= 0.0:  # not a maximum: keep the sample
        return 0.0, 0.0, float(s[1, 1])
    ox = (dy * dxy - dx * dyy) / det
    oy = (dx * dxy - dy * dxx) / det
    if abs(ox) > 1.0 or abs(oy) > 1.0:
        return 0.0, 0.0, float(s[1, 1])
    value = s[1, 1] + 0.5 * (dx * ox + dy * oy)
    return float(ox), float(oy), float(min(value, 1.0))


def window_scores(image: np.ndarray, y0: int, x0: int, template: np.ndarray, weights: np.ndarray, method: int,
                  out: np.ndarray) -> None:
    """Scores of one variant at every position of a window of ``image`` (H, W, C) into ``out`` (n, m).

    Position (i, j) puts the variant's top-left corner at (y0 + i, x0 + j), all
    of it inside the image (see :func:`_window_scores`). Small windows run on
    the calling thread: a parallel launch costs more than their work.
    """
    # The work is the mask's pixels, not the canvas's: a rotated bar's canvas is mostly outside it.
    work = out.size * int(np.count_nonzero(weights)) * template.shape[2]
    kernel = _window_scores if work > _PARALLEL_WORK else _window_scores_serial
    kernel(_rows(image), image.shape[2], y0, x0, _rows(template), _weights(weights), method, out)
