"""Pose search's batched window kernels, each against the float64 reference of tests/naive.py.

Bounds from rounding (tests/bounds.py), not fitted: float64 sums of at most n
terms (n = the window's pixels x channels), each of the cross term, the
template's energy T and the window's E within gamma(4n) of the sum of its
terms' magnitudes; to first order r = C / sqrt(T E) moves by
dC / sqrt(T E) + (dT / T + dE / E) / 2.
"""

import math

import cv2
import numpy as np
import pytest

from bounds import U64, gamma
from naive import window_score

from featuremap.service.engine.pose.batch import Packed, batch_scores, shifted_scores
from featuremap.service.engine.pose.template import PoseTemplate

NAMES = ("ccoeff_normed", "ccorr_normed", "sqdiff_normed")
#: The unit roundoff of float32.
U32 = 2.0**-24


def _reference(image, template, weights, top, left, method, min_visible):
    """(reference score, allowed error) of the variant at (top, left) scored on its visible part; None where it
    must be -inf (under ``min_visible`` of its weight inside)."""
    height, width = image.shape[:2]
    h, w = weights.shape
    r0, r1 = max(0, -top), min(h, height - top)
    c0, c1 = max(0, -left), min(w, width - left)
    seen = weights[r0:r1, c0:c1] if r0 < r1 and c0 < c1 else np.zeros((0, 0))
    if seen.sum() == 0 or seen.sum() < min_visible * weights.sum():
        return None
    window = image[top + r0:top + r1, left + c0:left + c1].astype(np.float64)
    cut = template[r0:r1, c0:c1].astype(np.float64)
    reference = window_score(window, cut, seen.astype(np.float64), NAMES[method])
    if method == 2:
        reference = 1.0 - reference
    n = int(seen.sum()) * image.shape[2]
    m = seen[:, :, None]
    centre = method == 0
    tc = cut - (m * cut).sum((0, 1)) / m.sum() if centre else cut
    wc = window - (m * window).sum((0, 1)) / m.sum() if centre else window
    t_energy, w_energy = (m * tc**2).sum(), (m * wc**2).sum()
    # The cross term as the kernels may form it: centred first, or from the uncentred sums less the mean's part.
    mean = np.abs((m * cut).sum((0, 1)) / m.sum()) if centre else 0.0
    cross = (m * np.abs(cut) * np.abs(window)).sum() + (mean * (m * np.abs(window)).sum((0, 1))).sum()
    allowed = gamma(4 * n, U64) * (cross / np.sqrt(t_energy * w_energy) + 2.0 * (m * cut**2).sum() / t_energy
                                   + (m * window**2).sum() / w_energy)
    if method == 2:  # the distance E - 2C + T over sqrt(T E)
        allowed *= 2.0
    return reference, allowed, (m * cut**2).sum(), t_energy, (m * window**2).sum(), w_energy


def _box(h, w, angle):
    """A 0/1 mask of a box turned by ``angle`` on an h x w canvas."""
    weights = np.zeros((h, w), np.float32)
    corners = cv2.boxPoints((((w - 1) / 2.0, (h - 1) / 2.0), (w * 0.8, h * 0.55), angle))
    cv2.fillConvexPoly(weights, np.round(corners).astype(np.int32), 1.0)
    return weights


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("method", [0, 1, 2])
def test_a_batch_scores_every_window_as_the_reference(channels, method, parallel, monkeypatch):
    """Windows of several variants, inside the image and past its edges, in one call (on the calling thread or
    on every core): each position as the reference scores it, on the visible part (-inf under ``min_visible``
    of the mask inside); with ``min_visible`` 1, -inf wherever the variant's canvas is not whole inside."""
    from featuremap.service.engine.pose import batch

    if parallel:
        monkeypatch.setattr(batch, "_PARALLEL_BATCH", 0)
    rng = np.random.default_rng(5 + channels + 3 * method)
    image = rng.uniform(0, 255, (30, 26, channels)).astype(np.float32)
    variants = [(rng.uniform(0, 255, (h, w, channels)).astype(np.float32), _box(h, w, angle))
                for h, w, angle in ((9, 7, 30.0), (11, 13, -60.0), (7, 7, 0.0))]
    packed = Packed(variants)
    corners = [(-5, -4), (10, 8), (24, 20), (-2, 15), (3, 3)]
    items = np.array([[k % 3, y, x] for k, (y, x) in enumerate(corners)], np.int64)
    for min_visible in (0.4, 1.0):
        out = np.empty((len(items), 5, 5))
        batch_scores(image, packed, items, method, min_visible, out)
        for p, (v, y0, x0) in enumerate(items):
            template, weights = variants[v]
            h, w = weights.shape
            for i in range(5):
                for j in range(5):
                    top, left = int(y0) + i, int(x0) + j
                    whole = top >= 0 and left >= 0 and top + h <= 30 and left + w <= 26
                    found = _reference(image, template, weights, top, left, method, min_visible)
                    if found is None or (min_visible >= 1.0 and not whole):
                        assert out[p, i, j] == -np.inf, (p, top, left)
                        continue
                    assert abs(out[p, i, j] - found[0]) <= found[1], (p, top, left, out[p, i, j], found[0])



@pytest.mark.parametrize("parallel", [False, True])
def test_a_batch_scores_each_window_alike_however_its_variants_are_shared(parallel, monkeypatch):
    """The windows of one variant are scored together (its preparation shared): each window's scores are the
    same, bit for bit, as in a batch of its own, whatever the order and repetition of the variants, inside the
    image or past its edge."""
    from featuremap.service.engine.pose import batch

    if parallel:
        monkeypatch.setattr(batch, "_PARALLEL_BATCH", 0)
    rng = np.random.default_rng(11)
    image = rng.uniform(0, 255, (30, 26, 1)).astype(np.float32)
    variants = [(rng.uniform(0, 255, (h, w, 1)).astype(np.float32), _box(h, w, angle))
                for h, w, angle in ((9, 7, 30.0), (11, 13, -60.0), (7, 7, 0.0), (5, 9, 10.0))]
    packed = Packed(variants)
    items = np.array([[2, -3, 4], [0, 10, 8], [2, 12, 9], [0, -5, -4], [2, 24, 20], [0, 3, 3], [1, 8, 20]],
                     np.int64)  # variant 3 unused; 0 and 2 at several places, some past the edge
    for method in (0, 1, 2):
        for min_visible in (0.4, 1.0):
            out = np.empty((len(items), 4, 4))
            batch_scores(image, packed, items, method, min_visible, out)
            for p in range(len(items)):
                alone = np.empty((1, 4, 4))
                batch_scores(image, packed, items[p:p + 1], method, min_visible, alone)
                np.testing.assert_array_equal(out[p], alone[0])
    assert batch._groups(items, 4)[1].tolist() == [0, 3, 4, 7]  # (variants 0, 1, 2: three groups; 3 has none)
    assert batch._groups(items, 4)[0].tolist() == [1, 3, 5, 6, 0, 2, 4]

def _drawn(source, mask, masked, matrix, h, w):
    """The variant drawn in float64 as the kernel draws it: bilinear, zero outside, counted where covered whole
    (and where the template's mask interpolates to at least a half)."""
    hs, ws = source.shape[:2]
    image = np.zeros((h, w, source.shape[2]))
    weights = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            sx = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]
            sy = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
            x0, y0 = math.floor(sx), math.floor(sy)
            fx, fy = sx - x0, sy - y0
            covered, inside = 0.0, 0.0
            for (dy, dx), tap in (((0, 0), (1 - fx) * (1 - fy)), ((0, 1), fx * (1 - fy)),
                                  ((1, 0), (1 - fx) * fy), ((1, 1), fx * fy)):
                if 0 <= y0 + dy < hs and 0 <= x0 + dx < ws:
                    covered += tap
                    inside += tap * mask[y0 + dy, x0 + dx]
                    image[y, x] += tap * source[y0 + dy, x0 + dx]
            weights[y, x] = covered >= 0.999 and (not masked or inside >= 0.5)
    return image, weights


@pytest.mark.parametrize("together", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("method", [0, 1, 2])
def test_a_variant_drawn_in_the_kernel_scores_as_the_reference(channels, method, together, monkeypatch):
    """The finish's variants, drawn at sub-pixel shifts and scored in one pass, inside the image and past its
    edge, masked or not, one per call or all in one (on every core): as the reference scores the variant drawn
    in float64. The kernel stores each drawn value in float32 (one rounding: within U32 of it, so the template
    moves by at most U32 ||t|| in 2-norm, and r by at most 2 U32 ||t|| / sqrt(T), the distance's score by the
    same over its terms)."""
    from featuremap.service.engine.pose import batch

    if together:
        monkeypatch.setattr(batch, "_PARALLEL_DRAWN", 0)
    rng = np.random.default_rng(17 + channels + 3 * method)
    source = cv2.GaussianBlur(rng.uniform(0, 255, (21, 17, channels)).astype(np.float32), (5, 5), 1.2)
    source = source.reshape(21, 17, channels)
    mask = (rng.uniform(size=(21, 17)) > 0.15).astype(np.uint8)
    image = rng.uniform(0, 255, (40, 36, channels)).astype(np.float32)
    for masked in (False, True):
        template = PoseTemplate(source, mask if masked else None, 1)
        cases = []  # (level, pose row, matrix, h, w, top, left)
        for k in range(12):
            level = k % 2
            angle, scale = float(rng.uniform(-180, 180)), float(rng.uniform(0.8, 1.25))
            shift = (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)))
            matrix, (h, w) = template.placement(level, angle, scale, shift=shift)
            top, left = int(rng.integers(-h // 2, 40 - h // 2)), int(rng.integers(-w // 2, 36 - w // 2))
            cases.append((level, [angle, scale, *shift, left + w // 2, top + h // 2], matrix, h, w, top, left))
        for min_visible in (0.5, 1.0):
            scores = {}
            for level in (0, 1):
                mine = [n for n, case in enumerate(cases) if case[0] == level]
                groups = [mine] if together else [[n] for n in mine]
                for group in groups:
                    out = np.empty(len(group))
                    shifted_scores(image, template, level, np.array([cases[n][1] for n in group]), method,
                                   min_visible, out)
                    scores.update(zip(group, out.tolist()))
            for n, (level, _, matrix, h, w, top, left) in enumerate(cases):
                drawn, weights = _drawn(template.images[level].astype(np.float64), template.masks[level],
                                        template.masked, matrix, h, w)
                whole = top >= 0 and left >= 0 and top + h <= 40 and left + w <= 36
                found = _reference(image, drawn, weights.astype(np.float32), top, left, method, min_visible)
                if found is None or (min_visible >= 1.0 and not whole):
                    assert scores[n] == -np.inf, (masked, level, top, left)
                    continue
                reference, allowed, t_raw, t_energy, w_raw, w_energy = found
                drift = U32 * math.sqrt(t_raw)  # ||delta||, the stored values' rounding
                if method == 2:
                    distance = (1.0 - reference) * math.sqrt(t_energy * w_energy)
                    norm = math.sqrt(t_energy * w_energy)
                    allowed += (2.0 * drift * (math.sqrt(w_raw) + math.sqrt(t_raw)) / norm
                                + abs(distance) * math.sqrt(t_raw) * drift / (t_energy * norm))
                else:
                    allowed += 2.0 * drift / math.sqrt(t_energy)
                assert abs(scores[n] - reference) <= allowed, (masked, level, top, left, scores[n], reference)
