"""Many poses' windows scored in one call: the variants packed into one buffer, one kernel call per batch.

A search scores thousands of small windows (a tray of 24 parts: about 2,400),
each a variant at a few positions. One at a time, each cost a Python call, its
conversions and its variant's preparation, and all of them ran on one core:
the windows of one refinement round, or of every angle at the edge band's
places, now go to the kernel together, on every core where there is work
enough. The finish's variants, drawn at sub-pixel shifts, are drawn and
scored in one pass (:func:`shifted_scores`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..runtime import FASTMATH, JIT
from ..turn import WHOLE
from .scores import _clipped_window, _cut_parts, _prepare_scores, _rows, _score_at, _similarity
from .template import PoseTemplate

# Batches with less work than this (positions x variant pixels) run on the calling thread: a parallel
# launch of many small windows waited on its threads longer than it saved on busy cores.
_PARALLEL_BATCH = 1 << 21

# The same for variants drawn and scored in one pass (:func:`shifted_scores`; its work counts canvas pixels at
# most): a pixel drawn costs several scored (four taps and their tests), and a tray's finish steps of 54 to 72
# variants of 40x40 ran in 0.8 ms on one core, 0.3-0.55 ms on two; a part's steps of 3 stay serial.
_PARALLEL_DRAWN = 1 << 17


class Packed:
    """Variants packed for :func:`batch_scores`: their (h, w C) rows and (h, w) masks in two flat buffers."""

    __slots__ = ("images", "weights", "starts", "shapes", "work")

    def __init__(self, variants: list[tuple[np.ndarray, np.ndarray]]) -> None:
        # (Python lists, one array each at the end: a numpy row assigned per variant cost 15 us of them.)
        shapes = [weights.shape for _, weights in variants]
        sizes = [(image.size, weights.size) for image, weights in variants]
        self.shapes = np.array(shapes, np.int64).reshape(-1, 2)
        self.starts = np.zeros((len(variants), 2), np.int64)
        if len(variants) > 1:
            np.cumsum(np.array(sizes[:-1], np.int64), axis=0, out=self.starts[1:])
        self.images = np.concatenate([image.ravel() for image, _ in variants]).astype(np.float32, copy=False) \
            if variants else np.empty(0, np.float32)
        self.weights = np.concatenate([weights.ravel() for _, weights in variants]).astype(np.float32, copy=False) \
            if variants else np.empty(0, np.float32)
        # Each variant's cost per position (at most): its canvas's pixels times the channels.
        self.work = np.array([image for image, _ in sizes], np.int64)


def batch_scores(image: np.ndarray, packed: Packed, items: np.ndarray, method: int, min_visible: float,
                 out: np.ndarray) -> None:
    """Scores of packed variants, each at a window of positions, into ``out`` (n, side, side).

    ``items`` (n, 3) int64: the variant (index into ``packed``) and the
    top-left corner (y0, x0) of its first position in ``image`` (H, W, C)
    float32; position (i, j) puts it at (y0 + i, x0 + j). A window whose
    variant lies whole in the image at every position is scored as
    :func:`~.scores.window_scores` scores it; one reaching past the edge as
    :func:`~.scores.clipped_scores` does (each position on its visible part,
    -inf under ``min_visible`` of the mask inside), and with ``min_visible``
    1 only positions where the whole canvas lies inside score.

    The items of one variant are scored together, its preparation made once
    (the edge band's 25 places at each of 32 angles prepared each variant 25
    times: a fifth of that call, and an allocation per item inside the
    parallel loop).
    """
    side = out.shape[1] * out.shape[2]
    work = int(packed.work[items[:, 0]].sum()) * side if len(items) else 0
    order, bounds = _groups(items, len(packed.shapes))
    kernel = _batch_scores if work > _PARALLEL_BATCH and len(bounds) > 2 else _batch_scores_serial
    kernel(_rows(image), image.shape[2], packed.images, packed.weights, packed.starts, packed.shapes, items, order,
           bounds, method, min_visible, out)


@njit(**JIT)
def _groups(items, n_variants):
    """The items (n, 3) grouped by variant: their indices in variant order (stable), and where each non-empty
    group starts in it (then n). Counted, in one compiled call: numpy's sort and its cuts cost a batch of one
    window more than its score."""
    n = items.shape[0]
    starts = np.zeros(n_variants + 1, np.int64)
    for p in range(n):
        starts[items[p, 0] + 1] += 1
    groups = 0
    for v in range(n_variants):
        groups += 1 if starts[v + 1] > 0 else 0
        starts[v + 1] += starts[v]
    bounds = np.empty(groups + 1, np.int64)
    g = 0
    for v in range(n_variants):
        if starts[v + 1] > starts[v]:
            bounds[g] = starts[v]
            g += 1
    bounds[groups] = n
    order = np.empty(n, np.int64)
    for p in range(n):
        v = items[p, 0]
        order[starts[v]] = p
        starts[v] += 1
    return order, bounds


@njit(error_model="numpy", **JIT)
def _score_group(image, n_channels, images, weights, starts, shapes, items, order, lo, hi, method, min_visible,
                 out):
    """Items ``order[lo:hi]`` of :func:`batch_scores`, all of one variant, into their rows of ``out``: the
    variant prepared once, its clipped windows' parts (:func:`~.scores._cut_parts`) only where one reaches past
    the image's edge. Every item's rows are its own: no two groups write the same row of ``out``."""
    height, width = image.shape[0], image.shape[1] // n_channels
    v = items[order[lo], 0]
    h, w = shapes[v, 0], shapes[v, 1]
    template = images[starts[v, 0]:starts[v, 0] + h * w * n_channels].reshape(h, w * n_channels)
    mask = weights[starts[v, 1]:starts[v, 1] + h * w].reshape(h, w)
    n, m = out.shape[1], out.shape[2]
    rows, masks, first, last, msum, tenergy = _prepare_scores(template, mask, method)
    sums = np.empty(n_channels)
    prepared = False
    plain, prefix_m, prefix_t = rows, np.empty((0, 1)), np.empty((0, 1, n_channels))
    for k in range(lo, hi):
        p = order[k]
        y0, x0 = items[p, 1], items[p, 2]
        dest = out[p]
        if y0 >= 0 and x0 >= 0 and y0 + n - 1 + h <= height and x0 + m - 1 + w <= width:
            for i in range(n):
                for j in range(m):
                    dest[i, j] = _score_at(image, n_channels, rows, masks, first, last, msum, tenergy, method, y0 + i,
                                           x0 + j, sums)
            continue
        if not prepared:
            plain, prefix_m, prefix_t = _cut_parts(template, mask, method, rows)
            prepared = True
        _clipped_window(image, n_channels, rows, plain, masks, first, last, msum, tenergy, prefix_m, prefix_t, method,
                        y0, x0, min_visible, dest)
        if min_visible >= 1.0:  # whole canvases only
            for i in range(n):
                for j in range(m):
                    if y0 + i < 0 or x0 + j < 0 or y0 + i + h > height or x0 + j + w > width:
                        dest[i, j] = -np.inf


@njit(parallel=True, error_model="numpy", **JIT)
def _batch_scores(image, n_channels, images, weights, starts, shapes, items, order, bounds, method, min_visible, out):
    for g in prange(bounds.shape[0] - 1):
        _score_group(image, n_channels, images, weights, starts, shapes, items, order, bounds[g], bounds[g + 1],
                     method, min_visible, out)


@njit(error_model="numpy", **JIT)
def _batch_scores_serial(image, n_channels, images, weights, starts, shapes, items, order, bounds, method,
                         min_visible, out):
    for g in range(bounds.shape[0] - 1):
        _score_group(image, n_channels, images, weights, starts, shapes, items, order, bounds[g], bounds[g + 1],
                     method, min_visible, out)


@njit(error_model="numpy", **JIT)
def _row_span(m, y, w, hs, ws):
    """The canvas columns of row ``y`` whose source point may lie within a pixel of the template (a pixel wider
    either side; each is still tested): the rest of a turned canvas is skipped without a test per pixel."""
    start, end = 0.0, float(w)
    for a, b, top in ((m[0], m[1] * y + m[2], ws), (m[3], m[4] * y + m[5], hs)):
        # -1 <= a x + b < top
        if a > 0.0:
            start, end = max(start, (-1.0 - b) / a), min(end, (top - b) / a)
        elif a < 0.0:
            start, end = max(start, (top - b) / a), min(end, (-1.0 - b) / a)
        elif not -1.0 <= b < top:
            return 0, 0
    if start >= end:
        return 0, 0
    return max(0, int(math.floor(start)) - 1), min(w, int(math.ceil(end)) + 1)


@njit(error_model="numpy", fastmath=FASTMATH, **JIT)
def _drawn_score_gray(image, source, smask, masked, m, h, w, top, left, method, min_visible, sums):
    """:func:`_drawn_score` of one channel, its sums in registers (through arrays, half its time went to them)."""
    height, width = image.shape[0], image.shape[1]
    hs, ws = source.shape[0], source.shape[1]
    total = msum = energy = tenergy = tsum = fsum = tcross = 0.0
    for y in range(h):
        row = top + y
        first, last = _row_span(m, y, w, hs, ws)
        for x in range(first, last):
            sx = m[0] * x + m[1] * y + m[2]
            sy = m[3] * x + m[4] * y + m[5]
            x0, y0 = math.floor(sx), math.floor(sy)
            if x0 < -1 or y0 < -1 or x0 >= ws or y0 >= hs:
                continue  # wholly outside the template
            fx, fy = sx - x0, sy - y0
            w00, w01, w10, w11 = (1.0 - fx) * (1.0 - fy), fx * (1.0 - fy), (1.0 - fx) * fy, fx * fy
            if x0 >= 0 and y0 >= 0 and x0 + 1 < ws and y0 + 1 < hs:  # every tap inside: covered whole
                value = (w00 * source[y0, x0] + w01 * source[y0, x0 + 1] + w10 * source[y0 + 1, x0]
                         + w11 * source[y0 + 1, x0 + 1])
                if masked and (w00 * smask[y0, x0] + w01 * smask[y0, x0 + 1] + w10 * smask[y0 + 1, x0]
                               + w11 * smask[y0 + 1, x0 + 1]) < 0.5:
                    continue
            else:
                covered, inside, value = 0.0, 0.0, 0.0
                for k in range(4):
                    yy, xx = y0 + k // 2, x0 + k % 2
                    tap = w00 if k == 0 else w01 if k == 1 else w10 if k == 2 else w11
                    if 0 <= yy < hs and 0 <= xx < ws:
                        covered += tap
                        inside += tap * smask[yy, xx] if masked else 0.0
                        value += tap * source[yy, xx]
                if covered < WHOLE or (masked and inside < 0.5):
                    continue
            total += 1.0
            col = left + x
            if row < 0 or row >= height or col < 0 or col >= width:
                continue  # outside the image: scored on the visible part
            msum += 1.0
            t = np.float64(np.float32(value))
            f = np.float64(image[row, col])
            tsum += t
            fsum += f
            tcross += t * f
            tenergy += t * t
            energy += f * f
    if msum <= 0.0 or msum < min_visible * total:
        return -np.inf
    centre = tsum / msum if method == 0 else 0.0  # ccoeff_normed centres
    sums[0] = fsum
    return _similarity(tcross - centre * fsum, energy, max(tenergy - centre * tsum, 0.0), sums, 1, msum, method)


@njit(error_model="numpy", fastmath=FASTMATH, **JIT)
def _drawn_score(image, n_channels, source, smask, masked, m, h, w, top, left, method, min_visible, pixel, sums):
    """The score of a variant drawn as :meth:`~.template.PoseTemplate.variant` draws it (no disc, no pairing)
    with its top-left corner at (top, left) of ``image``, drawn and scored in one pass: canvas pixel (x, y) is
    bilinear at source point (m0 x + m1 y + m2, m3 x + m4 y + m5) of ``source`` (hs, ws C) rows and counts
    where the source covers it whole (and, ``masked``, where ``smask`` (hs, ws) interpolates to at least a
    half). Scored as :func:`~.scores._score_at`, or where the canvas reaches past the image's edge as
    :func:`~.scores._cut_score` (its pixels inside alone; -inf under ``min_visible`` of its weight inside);
    the template's mean and energy from its sums in float64 (exact to ~1e-12 for 8-bit values), not centred
    first. ``pixel`` and ``sums`` (C,) are scratch. (One function over its 70 lines: a compiled pass, drawing
    and summing per pixel; split, the drawn canvas would go through memory.)"""
    if n_channels == 1:
        return _drawn_score_gray(image, source, smask, masked, m, h, w, top, left, method, min_visible, sums)
    height, width = image.shape[0], image.shape[1] // n_channels
    hs, ws = source.shape[0], source.shape[1] // n_channels
    total = msum = cross = energy = tenergy = 0.0
    tsum = np.zeros(n_channels)
    fsum = np.zeros(n_channels)
    tcross = np.zeros(n_channels)
    for y in range(h):
        row = top + y
        first, last = _row_span(m, y, w, hs, ws)
        for x in range(first, last):
            sx = m[0] * x + m[1] * y + m[2]
            sy = m[3] * x + m[4] * y + m[5]
            x0, y0 = math.floor(sx), math.floor(sy)
            if x0 < -1 or y0 < -1 or x0 >= ws or y0 >= hs:
                continue  # wholly outside the template
            fx, fy = sx - x0, sy - y0
            w00, w01, w10, w11 = (1.0 - fx) * (1.0 - fy), fx * (1.0 - fy), (1.0 - fx) * fy, fx * fy
            if x0 >= 0 and y0 >= 0 and x0 + 1 < ws and y0 + 1 < hs:  # every tap inside: covered whole
                a, b = y0, x0 * n_channels
                for c in range(n_channels):
                    pixel[c] = np.float32(w00 * source[a, b + c] + w01 * source[a, b + n_channels + c]
                                          + w10 * source[a + 1, b + c] + w11 * source[a + 1, b + n_channels + c])
                if masked and (w00 * smask[a, x0] + w01 * smask[a, x0 + 1] + w10 * smask[a + 1, x0]
                               + w11 * smask[a + 1, x0 + 1]) < 0.5:
                    continue
            else:
                covered, inside = 0.0, 0.0
                for c in range(n_channels):
                    pixel[c] = 0.0
                for k in range(4):
                    yy, xx = y0 + k // 2, x0 + k % 2
                    tap = w00 if k == 0 else w01 if k == 1 else w10 if k == 2 else w11
                    if 0 <= yy < hs and 0 <= xx < ws:
                        covered += tap
                        inside += tap * smask[yy, xx] if masked else 0.0
                        for c in range(n_channels):
                            pixel[c] += tap * source[yy, xx * n_channels + c]
                if covered < WHOLE or (masked and inside < 0.5):
                    continue
            total += 1.0
            col = left + x
            if row < 0 or row >= height or col < 0 or col >= width:
                continue  # outside the image: scored on the visible part
            msum += 1.0
            for c in range(n_channels):
                t = np.float64(np.float32(pixel[c]))
                f = np.float64(image[row, col * n_channels + c])
                tsum[c] += t
                fsum[c] += f
                tcross[c] += t * f
                tenergy += t * t
                energy += f * f
    if msum <= 0.0 or msum < min_visible * total:
        return -np.inf
    for c in range(n_channels):
        centre = tsum[c] / msum if method == 0 else 0.0  # ccoeff_normed centres
        cross += tcross[c] - centre * fsum[c]
        tenergy -= centre * tsum[c]
        sums[c] = fsum[c]
    return _similarity(cross, energy, max(tenergy, 0.0), sums, n_channels, msum, method)


@njit(error_model="numpy", **JIT)
def _placement(height, width, level, angle, scale, dx, dy, m):
    """:meth:`~.template.PoseTemplate.placement_row` (no disc) into ``m`` (6,); the canvas's (height, width)."""
    half_w = scale * width / 2.0 ** level / 2.0
    half_h = scale * height / 2.0 ** level / 2.0
    radians = math.radians(angle)
    cos, sin = math.cos(radians), math.sin(radians)
    side_y = 2 * max(1, math.ceil(abs(sin) * half_w + abs(cos) * half_h - 0.5)) + 1
    side_x = 2 * max(1, math.ceil(abs(cos) * half_w + abs(sin) * half_h - 0.5)) + 1
    centre_x = (width - 1) / 2.0 / 2.0 ** level
    centre_y = (height - 1) / 2.0 / 2.0 ** level
    a, b, c, d = cos / scale, -sin / scale, sin / scale, cos / scale
    at_x, at_y = (side_x - 1) / 2.0 + dx, (side_y - 1) / 2.0 + dy
    m[0], m[1], m[2] = a, b, centre_x - a * at_x - b * at_y
    m[3], m[4], m[5] = c, d, centre_y - c * at_x - d * at_y
    return side_y, side_x


@njit(error_model="numpy", **JIT)
def _shifted_one(image, n_channels, source, smask, masked, height, width, level, poses, p, method, min_visible,
                 out):
    """Pose ``p`` of :func:`shifted_scores` into ``out[p]``."""
    pixel = np.empty(n_channels)
    sums = np.empty(n_channels)
    m = np.empty(6)
    h, w = _placement(height, width, level, poses[p, 0], poses[p, 1], poses[p, 2], poses[p, 3], m)
    top, left = int(poses[p, 5]) - h // 2, int(poses[p, 4]) - w // 2
    if min_visible >= 1.0 and (top < 0 or left < 0 or top + h > image.shape[0]
                               or left + w > image.shape[1] // n_channels):
        out[p] = -np.inf
    else:
        out[p] = _drawn_score(image, n_channels, source, smask, masked, m, h, w, top, left, method, min_visible,
                              pixel, sums)


@njit(error_model="numpy", **JIT)
def _shifted_scores(image, n_channels, source, smask, masked, height, width, level, poses, method, min_visible, out):
    for p in range(out.shape[0]):
        _shifted_one(image, n_channels, source, smask, masked, height, width, level, poses, p, method, min_visible, out)


@njit(parallel=True, error_model="numpy", **JIT)
def _shifted_scores_parallel(image, n_channels, source, smask, masked, height, width, level, poses, method,
                             min_visible, out):
    for p in prange(out.shape[0]):
        _shifted_one(image, n_channels, source, smask, masked, height, width, level, poses, p, method, min_visible, out)


def shifted_scores(image: np.ndarray, template: PoseTemplate, level: int, poses: np.ndarray, method: int,
                   min_visible: float, out: np.ndarray) -> None:
    """Variants of ``template`` at ``level``, at ``poses`` (n, 6) (angle, scale, dx, dy, cx, cy: the template's
    centre (dx, dy) off the canvas's, the canvas centred on pixel (cx, cy) of ``image`` (H, W, C) float32), each
    scored there into ``out`` (n,): as a variant made by :meth:`~.template.PoseTemplate.variant` and scored by
    :func:`batch_scores` at one position (-inf where none counts). Many poses run on every core."""
    poses = np.ascontiguousarray(poses, np.float64)
    side = max(template.height, template.width) * float(poses[:, 1].max(initial=1.0)) / 2.0 ** level
    work = len(poses) * 2.0 * side * side  # the canvases' pixels, at most
    kernel = _shifted_scores_parallel if work > _PARALLEL_DRAWN and len(poses) > 1 else _shifted_scores
    kernel(_rows(image), image.shape[2], _rows(template.images[level]),
           np.ascontiguousarray(template.masks[level], np.float32), template.masked, template.height, template.width,
           level, poses, method, min_visible, out)


def warm_batch() -> None:
    """Compile the batch kernels, serial and parallel, gray and colour."""
    for channels in (1, 3):
        image = np.zeros((6, 6, channels), np.float32)
        packed = Packed([(np.ones((4, 4, channels), np.float32), np.ones((4, 4), np.float32))])
        items = np.array([[0, 0, 0], [0, -1, -1]], np.int64)
        order, bounds = _groups(items, 1)
        for kernel in (_batch_scores, _batch_scores_serial):
            kernel(_rows(image), channels, packed.images, packed.weights, packed.starts, packed.shapes, items, order,
                   bounds, 0, 0.5, np.empty((2, 3, 3)))
        for mask in (None, np.ones((16, 16), np.uint8)):
            template = PoseTemplate(np.ones((16, 16, channels), np.float32), mask, 0)
            poses = np.array([[10.0, 1.0, 0.1, 0.2, 0.0, 2.0], [-10.0, 1.0, 0.1, 0.2, 3.0, 2.0]])
            for kernel in (_shifted_scores, _shifted_scores_parallel):
                kernel(_rows(image), channels, _rows(template.images[0]), template.masks[0], template.masked, 16, 16,
                       0, poses, 0, 0.5, np.empty(2))
