"""Pose search's scoring kernels: a variant's scores over a small window, the top grid's reduction, the fits."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .runtime import FASTMATH, JIT

# Window scores with less work than this (positions x variant pixels) run on the calling thread.
_PARALLEL_WORK = 1 << 18


@njit(error_model="numpy", **JIT)
def _prepare_scores(template, weights, method):
    """A variant's side of :func:`_score_at`: its masked, centred values, their energy, the mask's row spans."""
    h, w, n_channels = template.shape
    msum = 0.0
    tmean = np.zeros(n_channels)
    for i in range(h):
        for j in range(w):
            msum += weights[i, j]
            for c in range(n_channels):
                tmean[c] += weights[i, j] * template[i, j, c]
    for c in range(n_channels):
        tmean[c] = tmean[c] / msum if msum > 0.0 else 0.0
    t = np.empty((h, w, n_channels))
    tenergy = 0.0
    for i in range(h):
        for j in range(w):
            for c in range(n_channels):
                v = np.float64(template[i, j, c]) - (tmean[c] if method == 0 else 0.0)
                t[i, j, c] = v * weights[i, j]
                tenergy += weights[i, j] * v * v
    # Each row's span of non-zero weights (one run for a rotated box): the
    # sums run over spans, without a test per pixel, and vectorise.
    first = np.full(h, w, np.int64)
    last = np.zeros(h, np.int64)
    for i in range(h):
        for j in range(w):
            if weights[i, j] != 0.0:
                first[i] = min(first[i], j)
                last[i] = j + 1
    return t, t[:, :, 0].copy(), first, last, msum, tenergy


@njit(error_model="numpy", fastmath=FASTMATH, **JIT)
def _score_at(roi, t, gray, weights, first, last, msum, tenergy, method, y, x):
    """The score of the window at (y, x) of ``roi`` (see :func:`_window_scores`)."""
    n_channels = t.shape[2]
    cross = 0.0
    energy = 0.0
    sums = np.zeros(n_channels)
    for i in range(t.shape[0]):
        a, b = first[i], last[i]
        if a >= b:
            continue
        mask_row = weights[i, a:b]
        if n_channels == 1:
            values = roi[y + i, x + a:x + b, 0]
            kernel = gray[i, a:b]
            total = 0.0
            for j in range(b - a):
                v = np.float64(values[j])
                weighted = mask_row[j] * v
                cross += kernel[j] * v
                energy += weighted * v
                total += weighted
            sums[0] += total
        else:
            for j in range(b - a):
                m = mask_row[j]
                for c in range(n_channels):
                    v = np.float64(roi[y + i, x + a + j, c])
                    cross += t[i, a + j, c] * v
                    energy += m * v * v
                    sums[c] += m * v
    if method == 0:
        for c in range(n_channels):
            energy -= sums[c] * sums[c] / msum if msum > 0.0 else 0.0
    denominator = math.sqrt(max(energy, 0.0) * tenergy)
    if method == 2:
        distance = energy - 2.0 * cross + tenergy
        return 1.0 - (max(distance, 0.0) / denominator if denominator > 0.0 else 1.0)
    return min(max(cross / denominator, -1.0), 1.0) if denominator > 0.0 else 0.0


@njit(parallel=True, error_model="numpy", **JIT)
def _window_scores(roi, template, weights, method, out):
    """Scores of one variant at every position of a small window, in float64.

    ``roi`` (H, W, C) float32 holds the windows; ``template`` (h, w, C) the
    variant, ``weights`` (h, w) its 0/1 mask; ``out`` (H-h+1, W-w+1).
    The same formulas as the Matcher's (OpenCV's masked ones); flat windows
    score 0 (ccoeff_normed, ccorr_normed) or 1 (sqdiff_normed's distance).
    """
    t, gray, first, last, msum, tenergy = _prepare_scores(template, weights, method)
    nx = out.shape[1]
    for p in prange(out.size):
        out[p // nx, p % nx] = _score_at(roi, t, gray, weights, first, last, msum, tenergy, method, p // nx, p % nx)


@njit(error_model="numpy", **JIT)
def _window_scores_serial(roi, template, weights, method, out):
    """:func:`_window_scores` on the calling thread: for small windows a parallel launch costs more than it saves."""
    t, gray, first, last, msum, tenergy = _prepare_scores(template, weights, method)
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            out[y, x] = _score_at(roi, t, gray, weights, first, last, msum, tenergy, method, y, x)


@njit(error_model="numpy", fastmath=FASTMATH, **JIT)
def _cut_score(image, template, weights, first, last, prefix_m, prefix_t, method, top, left, r0, r1, c0, c1,
               min_weight, mean, sums):
    """The score of the variant at (top, left) of ``image`` on its rows r0:r1 and columns c0:c1 alone.

    As :func:`_score_at` scores the variant cut to those pixels (the mask,
    the template's mean and energy over them alone), in one pass over them:
    the cut's weight and mean come from the rows' prefix sums ``prefix_m``
    (h, w + 1) and ``prefix_t`` (h, w + 1, C); ``mean`` and ``sums`` (C,) are
    scratch. A window along the frame's edge has a different cut at each
    position: preparing each as a variant of its own took three quarters of a
    clipped search's time. -inf where the cut's weight is under ``min_weight``.
    """
    n_channels = template.shape[2]
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
        for j in range(max(first[i], c0), min(last[i], c1)):
            m = np.float64(weights[i, j])
            for c in range(n_channels):
                t = np.float64(template[i, j, c]) - mean[c]
                v = np.float64(image[top + i, left + j, c])
                cross += m * t * v
                energy += m * v * v
                tenergy += m * t * t
                sums[c] += m * v
    if method == 0:
        for c in range(n_channels):
            energy -= sums[c] * sums[c] / msum
    denominator = math.sqrt(max(energy, 0.0) * tenergy)
    if method == 2:
        distance = energy - 2.0 * cross + tenergy
        return 1.0 - (max(distance, 0.0) / denominator if denominator > 0.0 else 1.0)
    return min(max(cross / denominator, -1.0), 1.0) if denominator > 0.0 else 0.0


@njit(error_model="numpy", **JIT)
def clipped_scores(image, template, weights, method, y0, x0, min_visible, out):
    """Scores of one variant at positions that may reach past the image's edge, each on its visible part.

    Position (i, j) puts the variant's top-left corner at (y0 + i, x0 + j) of
    ``image`` (H, W, C) float32. Each is scored as :func:`_window_scores`
    would score the variant cut to the pixels inside the image (its mask,
    mean and energy over those alone), and is -inf where under
    ``min_visible`` of the mask's weight is inside.
    """
    height, width = image.shape[0], image.shape[1]
    h, w, n_channels = template.shape
    # Positions whose variant lies whole in the image share one preparation (most of a window's).
    t_all, gray_all, first, last, msum_all, tenergy_all = _prepare_scores(template, weights, method)
    prefix_m = np.zeros((h, w + 1))
    prefix_t = np.zeros((h, w + 1, n_channels))
    for i in range(h):
        for j in range(w):
            m = np.float64(weights[i, j])
            prefix_m[i, j + 1] = prefix_m[i, j] + m
            for c in range(n_channels):
                prefix_t[i, j + 1, c] = prefix_t[i, j, c] + m * template[i, j, c]
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
                out[i, j] = _score_at(image[top:top + h, left:left + w], t_all, gray_all, weights, first, last,
                                      msum_all, tenergy_all, method, 0, 0)
            else:
                out[i, j] = _cut_score(image, template, weights, first, last, prefix_m, prefix_t, method, top, left,
                                       r0, r1, c0, c1, min_visible * total, mean, sums)


def keep_best(stack: np.ndarray, members: np.ndarray, best: np.ndarray, which: np.ndarray) -> None:
    """Where a map of ``stack`` (n, H, W) beats ``best`` (H, W), keep its score and its grid index.

    Large stacks by rows in parallel (on a 12 MP frame's grid of 32 poses the
    serial loop took a tenth of the search); small ones on the calling thread.
    """
    kernel = _keep_best if stack.size > _PARALLEL_WORK else _keep_best_serial
    kernel(stack, members, best, which)


@njit(parallel=True, **JIT)
def _keep_best(stack, members, best, which):
    for y in prange(stack.shape[1]):
        for i in range(stack.shape[0]):
            for x in range(stack.shape[2]):
                if stack[i, y, x] > best[y, x]:
                    best[y, x] = stack[i, y, x]
                    which[y, x] = members[i]


@njit(**JIT)
def _keep_best_serial(stack, members, best, which):
    for i in range(stack.shape[0]):
        for y in range(stack.shape[1]):
            for x in range(stack.shape[2]):
                if stack[i, y, x] > best[y, x]:
                    best[y, x] = stack[i, y, x]
                    which[y, x] = members[i]


def warm_kernels() -> None:
    """Compile pose search's window kernels, serial and parallel (warmup calls it)."""
    roi = np.zeros((6, 6, 1), np.float32)
    template = np.ones((4, 4, 1), np.float32)
    weights = np.ones((4, 4), np.float32)
    for kernel in (_window_scores, _window_scores_serial):
        kernel(roi, template, weights, 0, np.empty((3, 3)))
    clipped_scores(roi, template, weights, 0, -1, -1, 0.5, np.empty((3, 3)))
    for reduce in (_keep_best, _keep_best_serial):
        reduce(np.zeros((1, 2, 2), np.float32), np.zeros(1, np.int64), np.full((2, 2), -np.inf, np.float32),
               np.full((2, 2), -1, np.int64))


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


def window_scores(roi: np.ndarray, template: np.ndarray, weights: np.ndarray, method: int, out: np.ndarray) -> None:
    """Scores of one variant at every position of ``roi`` into ``out`` (see :func:`_window_scores`).

    Small windows run on the calling thread: a parallel launch costs more than their work.
    """
    # The work is the mask's pixels, not the canvas's: a rotated bar's canvas is mostly outside it.
    work = out.size * int(np.count_nonzero(weights)) * template.shape[2]
    kernel = _window_scores if work > _PARALLEL_WORK else _window_scores_serial
    kernel(roi, template, weights, method, out)
