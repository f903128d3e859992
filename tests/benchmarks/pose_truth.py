"""Ground truth for ``tests/pose_scenes.py`` by an independent exhaustive OpenCV search.

For every scene this writes, to ``tests/data/pose_truth.json``, the pose at
which each pasted copy of the part actually matches best in the finished
(blurred, noisy, JPEG'd) frame, found without the code under test:

1. Sweep. The part is rotated (and, in the scale scene, scaled) onto an odd
   canvas with OpenCV's bilinear warp, together with a mask of the canvas
   pixels it covers fully; ``cv2.matchTemplate(frame, variant,
   TM_CCOEFF_NORMED, mask=mask)`` runs over the whole frame for every angle
   of the scene's range at 0.5 degree steps (and every scale of a geometric
   grid about 8% apart), keeping the best score and its pose per centre. The
   12 MP scenes are too big for that (hours), so they are swept coarsely
   (the 26x20 part at full resolution every 3 degrees; the 762x521 part at
   1/8 resolution every degree) and then at 0.5 degree steps, full
   resolution, in a window round each place found.
2. Instances. Each pasted copy takes the sweep's best centre within
   0.35 x the part's smaller side of where it was pasted (the association
   uses the pasted place; the angle and scale come from the search), and
   the whole angle (x scale) grid is scored again in a 5x5 window there: the
   two best peaks of that angle profile are both refined (a near-symmetric
   part has two, and on the grid the wrong one can edge out the right one).
   A copy clipped by the frame's edge cannot be matched by a full-frame
   ``matchTemplate``; it gets that profile over centres within 2 px of
   where it was pasted, scoring only the part's pixels inside the frame
   (the mask restricted to them, one ``matchTemplate`` per centre).
3. Sub-pixel. From a grid pose a hill climb over a 3x3(x3) block of
   neighbouring whole-pixel centres, angles (and scales) moves until the
   block's centre is its best; a quadric fitted to the block's 27 (81)
   scores places the peak between the grid points (the parabola in angle
   and the 3x3 quadric in position, fitted jointly, so that a tilt between
   angle and position is not mistaken for either). The angle step is 0.5
   degrees, or less for large parts (so that the rim moves at most 0.5 px a
   step). Then the pose is polished by scoring the part warped to sub-pixel
   poses (blocks half a pixel and half a step apart, halving down to 1/64
   px, quadric steps in between): on whole pixels the angle partly stands
   in for the centre's fraction, which biases the first fit by up to ~1
   degree for small parts. The polish also starts once from the pasted pose;
   that start wins only where it ends higher (the truth is always the best
   pose found, and the report says when that start won). The score recorded
   is ``matchTemplate``'s at the final pose itself.
4. The 180-degree twin: the same climb and polish started at the instance's
   centre with the part turned 180 degrees (a few steps, so that it stays
   there), its score recorded as ``twin``.
5. The strongest false candidate: the best local peak of the sweep's map
   (5x5 neighbourhood) farther than half the part's smaller side (times the
   instance's scale) from every instance, refined like an instance. The map
   covers the centres at which the rotated part lies wholly in the frame
   (the coarse map, for the 12 MP scenes).

Every instance whose exhaustive pose is more than 0.5 px or 0.5 degrees from
its pasted pose (1 px and 1 degree for a clipped instance or a blurred scene)
is flagged in the report and in the JSON (``"flag": true``).

Run: ``python tests/benchmarks/pose_truth.py`` (about 10 minutes on 2 cores);
``--scenes a,b`` for some scenes (updating the JSON), ``--render DIR`` to draw
each scene with its truth boxes for checking by eye. Imports nothing from
featuremap.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pose_scenes  # noqa: E402

#: Angle step of the sweeps (degrees).
STEP = 0.5
#: Ratio between neighbouring scales of the scale scene's sweep.
SCALE_RATIO = 1.08
#: Scenes swept coarsely first: (downscale factor, angle step of the coarse sweep).
COARSE = {"tiny_12mp": (1, 3.0), "large_12mp": (8, 1.0)}
#: Pasted-vs-exhaustive tolerance (px and degrees); the looser one for clipped instances and blurred scenes.
TOLERANCE, LOOSE_TOLERANCE = 0.5, 1.0
OUT = Path(__file__).resolve().parents[1] / "data" / "pose_truth.json"


def wrap(angle: float) -> float:
    """The angle in [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


def _clean(scores: np.ndarray) -> np.ndarray:
    # A masked TM_CCOEFF_NORMED divides by the window's spread; where that is ~0 OpenCV returns
    # nan, inf or nonsense above 1. Such windows are no match.
    scores = np.nan_to_num(scores, nan=-1.0, posinf=-1.0, neginf=-1.0)
    scores[scores > 1.0001] = -1.0
    return np.clip(scores, -1.0, 1.0)


class Matcher:
    """Masked ``TM_CCOEFF_NORMED`` of one part against one frame, at any pose.

    Parameters
    ----------
    frame, template : numpy.ndarray
        uint8, the same channels.
    """

    def __init__(self, frame: np.ndarray, template: np.ndarray, angles=(-180.0, 180.0), scales=(0.0, 1e9)) -> None:
        self.frame = np.ascontiguousarray(frame, dtype=np.float32)
        # Poses outside the scene's ranges score -1: a climb stops at a range's end, as a search would.
        self.angles = None if angles[1] - angles[0] >= 360.0 else (float(angles[0]), float(angles[1]))
        self.scales = (float(scales[0]) * (1 - 1e-9), float(scales[1]) * (1 + 1e-9))
        self.template = np.ascontiguousarray(template, dtype=np.float32)
        self.h, self.w = template.shape[:2]
        self.H, self.W = frame.shape[:2]
        self._cache: dict[tuple, tuple] = {}
        self._padded: np.ndarray | None = None
        self._inside: np.ndarray | None = None
        self._pad = 0

    def variant(self, angle: float, scale: float, fx: float = 0.0, fy: float = 0.0, store: bool = True):
        """The part at ``angle`` and ``scale`` with its centre ``(fx, fy)`` off a canvas pixel.

        Returns
        -------
        (image, mask, ax, ay)
            The warped part cropped to the pixels it covers fully, the mask
            of those pixels (uint8), and the integer pixel of the crop at
            which the part's centre lies (less ``fx, fy``).
        """
        key = (round(angle, 6), round(scale, 8), round(fx, 6), round(fy, 6))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        w, h = self.w, self.h
        side = 2 * math.ceil(0.5 * math.hypot(w, h) * scale + 2) + 1  # odd: the centre is a pixel
        c = (side - 1) // 2
        centre = ((w - 1) / 2.0, (h - 1) / 2.0)
        matrix = cv2.getRotationMatrix2D(centre, angle, scale)
        matrix[:, 2] += np.array([c + fx, c + fy]) - centre
        image = cv2.warpAffine(self.template, matrix, (side, side), flags=cv2.INTER_LINEAR)
        cover = cv2.warpAffine(np.ones((h, w), np.float32), matrix, (side, side), flags=cv2.INTER_LINEAR)
        mask = cover >= 0.999  # only pixels the part covers fully: no blend with the canvas' zeros
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        out = (np.ascontiguousarray(image[y0:y1, x0:x1]), mask[y0:y1, x0:x1].astype(np.uint8), c - x0, c - y0)
        if store:
            if len(self._cache) > (16 if w * h > 100000 else 4000):
                self._cache.clear()
            self._cache[key] = out
        return out

    def full(self, angle: float, scale: float):
        """Scores of every centre at which the part lies wholly in the frame: (map, ax, ay), where map[y, x]
        is the score of the centre (x + ax, y + ay)."""
        image, mask, ax, ay = self.variant(angle, scale)
        if image.shape[0] > self.H or image.shape[1] > self.W:
            return None, ax, ay
        return _clean(cv2.matchTemplate(self.frame, image, cv2.TM_CCOEFF_NORMED, mask=mask)), ax, ay

    def _pad_to(self, pad: int) -> None:
        if pad <= self._pad:
            return
        self._pad = pad
        border = [pad] * 4
        self._padded = cv2.copyMakeBorder(self.frame, *border, cv2.BORDER_CONSTANT, value=0)
        self._inside = cv2.copyMakeBorder(np.ones((self.H, self.W), np.uint8), *border, cv2.BORDER_CONSTANT,
                                          value=0)

    def local(self, ix: int, iy: int, angle: float, scale: float, radius: int, fx: float = 0.0,
              fy: float = 0.0, store: bool = True) -> np.ndarray:
        """Scores of the centres (ix + dx + fx, iy + dy + fy), |dx|, |dy| <= radius: a (2r+1)^2 array.

        Where the part sticks out of the frame only its pixels inside are
        scored (the mask restricted to them); a centre with under a fifth of
        the part inside scores -1.
        """
        n = 2 * radius + 1
        if not self.scales[0] <= scale <= self.scales[1] or (
                self.angles is not None and not self.angles[0] - 1e-9 <= wrap(angle) <= self.angles[1] + 1e-9):
            return np.full((n, n), -1.0, np.float32)
        image, mask, ax, ay = self.variant(angle, scale, fx, fy, store)
        vh, vw = mask.shape
        x0, y0 = ix - ax - radius, iy - ay - radius
        if x0 >= 0 and y0 >= 0 and x0 + vw + n - 1 <= self.W and y0 + vh + n - 1 <= self.H:
            window = self.frame[y0:y0 + vh + n - 1, x0:x0 + vw + n - 1]
            return _clean(cv2.matchTemplate(window, image, cv2.TM_CCOEFF_NORMED, mask=mask))
        self._pad_to(max(vh, vw) + n + 8)
        pad = self._pad
        out = np.full((n, n), -1.0, np.float32)
        full = int(mask.sum())
        for dy in range(n):
            for dx in range(n):
                px, py = x0 + dx + pad, y0 + dy + pad
                if px < 0 or py < 0 or px + vw > self._padded.shape[1] or py + vh > self._padded.shape[0]:
                    continue
                kept = mask & self._inside[py:py + vh, px:px + vw]
                if kept.sum() < 0.2 * full:
                    continue
                window = self._padded[py:py + vh, px:px + vw]
                out[dy, dx] = _clean(cv2.matchTemplate(window, image, cv2.TM_CCOEFF_NORMED, mask=kept))[0, 0]
        return out

    def score(self, cx: float, cy: float, angle: float, scale: float) -> float:
        """The score of one sub-pixel pose (the part warped there)."""
        ix, iy = int(round(cx)), int(round(cy))
        return float(self.local(ix, iy, angle, scale, 0, cx - ix, cy - iy, store=False)[0, 0])


# --------------------------------------------------------------------------- sub-pixel


def fit_peak(block: np.ndarray) -> tuple[np.ndarray, float]:
    """The peak of a quadric fitted to a 3x3x... block of scores (axes of length 1 are skipped).

    Returns the peak's offset from the block's centre along each axis (in
    steps) and the quadric's value there. Where the quadric has no maximum
    within a step of the centre, parabolas through the centre along each axis
    give the offset instead (at most half a step).
    """
    shape = block.shape
    axes = [d for d, n in enumerate(shape) if n == 3]
    centre = np.array([n // 2 for n in shape])
    coords = np.array(list(np.ndindex(shape))) - centre
    u = coords[:, axes].astype(np.float64)
    values = block.reshape(-1).astype(np.float64)
    d = len(axes)
    pairs = [(i, j) for i in range(d) for j in range(i, d)]
    design = np.column_stack([np.ones(len(u))] + [u[:, i] for i in range(d)] + [u[:, i] * u[:, j] for i, j in pairs])
    coef = np.linalg.lstsq(design, values, rcond=None)[0]
    b = coef[1:1 + d]
    a = np.zeros((d, d))
    for k, (i, j) in enumerate(pairs):
        if i == j:
            a[i, i] = coef[1 + d + k]
        else:
            a[i, j] = a[j, i] = coef[1 + d + k] / 2.0
    offset = np.zeros(len(shape))
    if d and np.all(np.linalg.eigvalsh(a) < 0):
        peak = np.linalg.solve(2.0 * a, -b)
        if np.all(np.abs(peak) <= 1.0):
            offset[axes] = peak
            return offset, float(coef[0] + b @ peak + peak @ a @ peak)
    mid = tuple(centre)
    for axis in axes:
        lo, hi = list(mid), list(mid)
        lo[axis] -= 1
        hi[axis] += 1
        f0, fm, fp = block[mid], block[tuple(lo)], block[tuple(hi)]
        curve = fm - 2.0 * f0 + fp
        if curve < 0:
            offset[axis] = float(np.clip(0.5 * (fm - fp) / curve, -0.5, 0.5))
    return offset, float(block[mid])


def angle_step(w: int, h: int, scale: float) -> float:
    """The sweep's 0.5 degrees, or less where that would move the part's rim over 0.5 px."""
    return min(STEP, math.degrees(0.5 / (0.5 * math.hypot(w, h) * scale)))


def _steps(m: Matcher, scale: float) -> tuple[float, float]:
    """The fine angle step (degrees) and relative scale step at which the part's rim moves 0.5 px."""
    return angle_step(m.w, m.h, scale), 0.5 / (0.5 * math.hypot(m.w, m.h) * scale)


def refine(m: Matcher, ix: int, iy: int, angle: float, scale: float, with_scale: bool, moves: int = 40) -> dict:
    """Hill-climb a 3x3(x3)x3 block of (scale,) angle and whole-pixel centre from a grid pose, then fit its
    peak (a quadric through the block: the parabola in angle and the 3x3 quadric in position, jointly)."""
    da, ds = _steps(m, scale)
    seen: dict[tuple, np.ndarray] = {}

    def local(x: int, y: int, a: float, s: float) -> np.ndarray:
        key = (x, y, round(a, 9), round(s, 9))
        if key not in seen:
            seen[key] = m.local(x, y, a, s, 1)
        return seen[key]

    for move in range(moves + 1):
        scales = [scale / (1 + ds), scale, scale * (1 + ds)] if with_scale else [scale]
        block = np.array([[local(ix, iy, a, s) for a in (angle - da, angle, angle + da)] for s in scales])
        k = np.unravel_index(int(np.argmax(block)), block.shape)
        mid = (len(scales) // 2, 1, 1, 1)
        if k == mid or move == moves:
            break
        scale *= (1 + ds) ** (k[0] - mid[0])
        angle += (k[1] - 1) * da
        iy += k[2] - 1
        ix += k[3] - 1
    offset, _ = fit_peak(block)
    pose = {"cx": ix + offset[3], "cy": iy + offset[2], "angle": wrap(angle + offset[1] * da),
            "scale": scale * (1 + ds) ** offset[0] if with_scale else scale}
    pose["grid"] = float(block.max())
    return pose


def polish(m: Matcher, pose: dict, with_scale: bool, iterations: int = 40, reach: float = 2.0) -> dict:
    """Sharpen a pose by scoring the part warped to sub-pixel poses round it (trust-region Newton steps).

    A quadric through whole-pixel steps is biased wherever the score's peak
    is sharper than a pixel, and on whole pixels the angle partly stands in
    for the centre's fraction. Here each round scores a 3x3x3(x3) block of
    sub-pixel poses (half a pixel, half an angle step and half a scale step
    apart to begin with) round the current pose, fits a quadric and moves to
    its peak (at most ``reach`` steps away; to the block's best where the
    quadric has no peak), and halves the steps once the peak lies inside the
    block or nothing better turns up; it stops at 1/64 px. The pose returned
    scores at least as well as every pose scored (``score``: its
    ``matchTemplate`` score).
    """
    da, ds = _steps(m, pose["scale"])
    steps = np.array([0.5 * ds, 0.5 * da, 0.5, 0.5])  # log scale, angle, y, x
    x = np.array([math.log(pose["scale"]), pose["angle"], pose["cy"], pose["cx"]], np.float64)
    dims = [0, 1, 2, 3] if with_scale else [1, 2, 3]

    def f(v: np.ndarray) -> float:
        return m.score(v[3], v[2], v[1], math.exp(v[0]))

    value = f(x)
    offsets = np.array(list(np.ndindex(*([3] * len(dims))))) - 1
    for _ in range(iterations):
        block = np.empty(len(offsets))
        for k, u in enumerate(offsets):
            if not u.any():
                block[k] = value
                continue
            v = x.copy()
            v[dims] += u * steps[dims]
            block[k] = f(v)
        block = block.reshape([3] * len(dims))
        best_k = np.unravel_index(int(np.argmax(block)), block.shape)
        peak = _quadric_peak(block)
        inside = peak is not None and float(np.abs(peak).max()) <= 1.0
        candidates = []
        if block[best_k] > value:
            v = x.copy()
            v[dims] += (np.array(best_k) - 1) * steps[dims]
            candidates.append((float(block[best_k]), v))
        if peak is not None and np.any(peak):
            # The quadric's peak; beyond the block, a bounded Newton step (along a ridge, say).
            peak = peak * min(1.0, reach / float(np.abs(peak).max()))
            v = x.copy()
            v[dims] += peak * steps[dims]
            candidates.append((f(v), v))
        better = [c for c in candidates if c[0] > value + 1e-7]
        if better:
            value, x = max(better, key=lambda c: c[0])
        if inside or not better:
            steps *= 0.5
        if steps[3] < 1.0 / 64:
            break
    out = dict(pose)
    out.update(score=value, cx=float(x[3]), cy=float(x[2]), angle=wrap(float(x[1])), scale=math.exp(x[0]))
    if not with_scale:
        out["scale"] = pose["scale"]
    return out


def _quadric_peak(block: np.ndarray) -> np.ndarray | None:
    """The unconstrained peak of the quadric through a 3^d block (in steps), or None without a maximum."""
    d = block.ndim
    u = (np.array(list(np.ndindex(block.shape))) - 1).astype(np.float64)
    pairs = [(i, j) for i in range(d) for j in range(i, d)]
    design = np.column_stack([np.ones(len(u))] + [u[:, i] for i in range(d)] + [u[:, i] * u[:, j] for i, j in pairs])
    coef = np.linalg.lstsq(design, block.reshape(-1).astype(np.float64), rcond=None)[0]
    a = np.zeros((d, d))
    for k, (i, j) in enumerate(pairs):
        a[i, j] = a[j, i] = coef[1 + d + k] if i == j else coef[1 + d + k] / 2.0
    if not np.all(np.linalg.eigvalsh(a) < 0):
        return None
    return np.linalg.solve(2.0 * a, -coef[1:1 + d])


def settle(m: Matcher, ix: int, iy: int, angle: float, scale: float, with_scale: bool, moves: int = 40,
           iterations: int = 40) -> dict:
    """A grid pose's peak: :func:`refine` then :func:`polish`."""
    return polish(m, refine(m, ix, iy, angle, scale, with_scale, moves), with_scale, iterations)


# --------------------------------------------------------------------------- sweeps


def angle_grid(low: float, high: float, step: float) -> np.ndarray:
    if high - low >= 360.0:
        return np.arange(-180.0, 180.0, step)
    return np.arange(low, high + 1e-9, step)


def scale_grid(low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.array([low])
    count = math.ceil(math.log(high / low) / math.log(SCALE_RATIO)) + 1
    return np.geomspace(low, high, count)


def sweep(m: Matcher, angles: np.ndarray, scales: np.ndarray):
    """The best score per centre over the pose grid, and which pose (an index into the returned list) gave it."""
    best = np.full((m.H, m.W), -1.0, np.float32)
    which = np.zeros((m.H, m.W), np.int32)
    poses = [(float(a), float(s)) for s in scales for a in angles]
    for k, (a, s) in enumerate(poses):
        scores, ax, ay = m.full(a, s)
        if scores is None:
            continue
        rh, rw = scores.shape
        region, index = best[ay:ay + rh, ax:ax + rw], which[ay:ay + rh, ax:ax + rw]
        better = scores > region
        region[better] = scores[better]
        index[better] = k
    return best, which, poses


def local_sweep(m: Matcher, ix: int, iy: int, angles, scales, radius: int):
    """The best (score, ix, iy, angle, scale) over a window of centres and a list of poses."""
    best = (-2.0, ix, iy, 0.0, 1.0)
    for s in scales:
        for a in angles:
            scores = m.local(ix, iy, float(a), float(s), radius)
            k = int(np.argmax(scores))
            if scores.flat[k] > best[0]:
                dy, dx = divmod(k, scores.shape[1])
                best = (float(scores.flat[k]), ix + dx - radius, iy + dy - radius, float(a), float(s))
    return best


def angle_peaks(m: Matcher, ix: int, iy: int, angles: np.ndarray, scales: np.ndarray, radius: int,
                circle: bool, keep: int = 3, within: float = 0.05):
    """Grid poses (score, ix, iy, angle, scale) at the best-scoring angles round one place.

    The best centre within ``radius`` for every angle and scale of the grid
    gives a profile over angle (x scale); its local maxima that come within
    ``within`` of the best (at most ``keep``) are returned, best first. A
    near-symmetric part has two such maxima 180 degrees apart, and on a grid
    the wrong one can edge out the right one; each is refined, not just the
    first.
    """
    profile = np.full((len(scales), len(angles)), -2.0)
    where = np.zeros((len(scales), len(angles), 2), np.int64)
    for si, s in enumerate(scales):
        for ai, a in enumerate(angles):
            scores = m.local(ix, iy, float(a), float(s), radius)
            k = int(np.argmax(scores))
            profile[si, ai] = scores.flat[k]
            where[si, ai] = (ix + k % scores.shape[1] - radius, iy + k // scores.shape[1] - radius)
    padded = np.pad(profile, ((1, 1), (1, 1)), mode="constant", constant_values=-3.0)
    if circle:
        padded[1:-1, 0], padded[1:-1, -1] = profile[:, -1], profile[:, 0]
    local_max = np.ones_like(profile, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                local_max &= profile >= padded[1 + dy:1 + dy + profile.shape[0], 1 + dx:1 + dx + profile.shape[1]]
    top = profile.max()
    found = []
    for si, ai in sorted(zip(*np.nonzero(local_max & (profile >= top - within))), key=lambda k: -profile[k]):
        x, y = where[si, ai]
        found.append((float(profile[si, ai]), int(x), int(y), float(angles[ai]), float(scales[si])))
    return found[:keep]


def peaks(best: np.ndarray, count: int, keep_out: list[tuple[float, float, float]]):
    """The ``count`` best local maxima (5x5) of a score map, away from ``keep_out`` circles (x, y, r)."""
    is_peak = (best >= cv2.dilate(best, np.ones((5, 5), np.uint8))) & (best > -0.5)
    ys, xs = np.nonzero(is_peak)
    order = np.argsort(-best[ys, xs])
    found = []
    for k in order:
        x, y = int(xs[k]), int(ys[k])
        if all(math.hypot(x - cx, y - cy) > r for cx, cy, r in keep_out):
            found.append((x, y))
            if len(found) == count:
                break
    return found


# --------------------------------------------------------------------------- one scene


def truth(scene: pose_scenes.Scene, log=print) -> dict:
    """The exhaustive search's truth for one scene (the JSON entry), and a line of report per instance."""
    m = Matcher(scene.frame, scene.template, scene.angles, scene.scales)
    h, w = scene.template.shape[:2]
    with_scale = scene.scales[1] > scene.scales[0]
    scales = scale_grid(*scene.scales)
    started = time.perf_counter()

    if scene.name in COARSE:
        factor, coarse_step = COARSE[scene.name]
        if factor > 1:
            size = (round(m.W / factor), round(m.H / factor))
            small = cv2.resize(scene.frame, size, interpolation=cv2.INTER_AREA)
            part = cv2.resize(scene.template, (round(w / factor), round(h / factor)), interpolation=cv2.INTER_AREA)
            coarse = Matcher(small, part, scene.angles, scene.scales)
        else:
            coarse = m
        grid = angle_grid(*scene.angles, coarse_step)
    else:
        factor, coarse_step, coarse = 1, STEP, m
        grid = angle_grid(*scene.angles, STEP)
    best, which, poses = sweep(coarse, grid, scales)
    swept = time.perf_counter() - started

    def to_full(x: float) -> int:
        return int(round(factor * x + (factor - 1) / 2.0))

    circle = scene.angles[1] - scene.angles[0] >= 360.0

    def climb(seeds, moves: int = 40, start: dict | None = None, iterations: int = 40) -> dict:
        """The best settled pose from coarse-or-full grid seeds (score, x, y, angle, scale), and from ``start``
        (a pose to polish as it is) where given."""
        out = None
        for _, x, y, a, s in seeds:
            if coarse is not m or coarse_step > STEP:
                # Finer: 0.5 degree steps over the coarse step either side, centres over the coarse pixel.
                angles = [wrap(a + d) for d in np.arange(-coarse_step, coarse_step + 1e-9, STEP)]
                _, x, y, a, s = local_sweep(m, to_full(x), to_full(y), angles, [s], factor + 1)
            pose = settle(m, x, y, a, s, with_scale, moves, iterations)
            pose["from"] = "grid"
            if out is None or pose["score"] > out["score"]:
                out = pose
        if start is not None:
            # One more start: a climb from the pasted pose. It can only win by scoring higher, so the truth
            # stays the best pose found; it guards against a grid seed's climb stalling on a ridge.
            pose = polish(m, dict(start, grid=out["grid"]), with_scale)
            if pose["score"] > out["score"] + 1e-6:
                pose["from"] = "pasted"
                pose["gain"] = pose["score"] - out["score"]
                out = pose
        return out

    instances = []
    keep_out = []
    full_grid = angle_grid(*scene.angles, STEP)
    for i, pasted in enumerate(scene.instances):
        px, py, ps = pasted["cx"], pasted["cy"], pasted["scale"]
        reach = max(2.0, 0.35 * min(w, h) * ps)
        clipped = i in scene.clipped
        if clipped:
            # Only the visible part can be scored: a sweep of its own, per centre, the mask cut at the edge.
            seeds = angle_peaks(m, int(round(px)), int(round(py)), full_grid, scales, 2, circle)
        else:
            r = reach / factor
            x0, x1 = max(int(px / factor - r), 0), min(int(px / factor + r) + 2, coarse.W)
            y0, y1 = max(int(py / factor - r), 0), min(int(py / factor + r) + 2, coarse.H)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            near = np.where(np.hypot(xx * factor - px, yy * factor - py) <= reach, best[y0:y1, x0:x1], -2.0)
            k = int(np.argmax(near))
            sx, sy = int(xx.flat[k]), int(yy.flat[k])
            # Every angle again round the sweep's best centre there: the runner-up angle may win once refined.
            seeds = angle_peaks(coarse, sx, sy, grid, scales, 2, circle)
        found = climb(seeds, start={"cx": px, "cy": py, "angle": pasted["angle"], "scale": ps})
        # The twin: the part turned 180 degrees at the same place, climbing only a little.
        twin = settle(m, int(round(found["cx"])), int(round(found["cy"])), wrap(found["angle"] + 180.0),
                      found["scale"], with_scale, moves=4, iterations=8)
        dpos = math.hypot(found["cx"] - px, found["cy"] - py)
        dang = abs(wrap(found["angle"] - pasted["angle"]))
        dscale = found["scale"] / ps - 1.0
        tol = LOOSE_TOLERANCE if (clipped or scene.blurred) else TOLERANCE
        flag = dpos > tol or dang > tol
        at_pasted = m.score(px, py, pasted["angle"], ps)
        instances.append({
            "cx": round(found["cx"], 3), "cy": round(found["cy"], 3), "angle": round(found["angle"], 3),
            "scale": round(found["scale"], 5), "visible": pasted["visible"],
            "score": round(found["score"], 4), "twin": round(twin["score"], 4),
            "pasted": {"cx": px, "cy": py, "angle": pasted["angle"], "scale": ps, "score": round(at_pasted, 4)},
            "diff": {"px": round(dpos, 3), "deg": round(dang, 3), "scale": round(dscale, 4)},
            "flag": bool(flag),
        })
        for x, y in ((found["cx"], found["cy"]), (px, py)):
            keep_out.append((x / factor, y / factor, 0.5 * min(w, h) * ps / factor))
        log(f"  {scene.name}[{i:2d}] score {found['score']:.4f} (grid {found['grid']:.4f}, at pasted "
            f"{at_pasted:.4f}) twin {twin['score']:.4f} visible {pasted['visible']:.3f} "
            f"d {dpos:.3f} px {dang:.3f} deg {100 * dscale:+.2f}%{'  FLAG' if flag else ''}"
            f"{'  TWIN>=SCORE' if twin['score'] >= found['score'] else ''}"
            f"{'  PASTED>FOUND' if at_pasted > found['score'] + 1e-4 else ''}"
            f"{'  (the climb from the pasted pose won by %.4f)' % found['gain'] if found['from'] == 'pasted' else ''}")

    false_pose = None
    for x, y in peaks(best, 3, keep_out):
        a, s = poses[which[y, x]]
        # A false candidate's score matters, not its pose to 1/64 px: a shorter polish.
        candidate = climb([(float(best[y, x]), x, y, a, s)], moves=8, iterations=6)
        if false_pose is None or candidate["score"] > false_pose["score"]:
            false_pose = candidate
    entry = {
        "size": [m.W, m.H], "template": [w, h], "angles": list(scene.angles), "scales": list(scene.scales),
        "instances": instances,
        "best_false": round(false_pose["score"], 4) if false_pose else -1.0,
        # Where it is: cx, cy, angle, scale.
        "best_false_at": ([round(float(false_pose[k]), 2) for k in ("cx", "cy", "angle")]
                          + [round(float(false_pose["scale"]), 4)] if false_pose else None),
    }
    log(f"  {scene.name}: best false {entry['best_false']:.4f} at {entry['best_false_at']}; "
        f"sweep {swept:.1f} s, total {time.perf_counter() - started:.1f} s")
    return entry


# --------------------------------------------------------------------------- drawing


def render(scene: pose_scenes.Scene, entry: dict, path: Path) -> None:
    """The scene with the exhaustive poses (green, numbered), the pasted ones (thin red) and the strongest false
    candidate (yellow); frames over 1600 px wide shrunk; a strip of 8x zoomed instances for small parts."""
    h, w = scene.template.shape[:2]
    frame = scene.frame if scene.frame.ndim == 3 else cv2.cvtColor(scene.frame, cv2.COLOR_GRAY2BGR)
    zoom = min(1.0, 1600.0 / frame.shape[1])

    def draw(image, pose, colour, thick, z, origin=(0.0, 0.0), label=None):
        corners = pose_scenes.box_corners(w, h, pose["angle"], pose["scale"], pose["cx"] - origin[0],
                                          pose["cy"] - origin[1])
        points = np.round(((corners + 0.5) * z - 0.5) * 16).astype(np.int32)
        cv2.polylines(image, [points], True, colour, thick, cv2.LINE_AA, shift=4)
        # A tick from the centre along the part's top edge direction shows which way is up.
        top = (corners[0] + corners[1]) / 2.0
        c = np.array([pose["cx"] - origin[0], pose["cy"] - origin[1]])
        cv2.line(image, tuple(np.round(((c + 0.5) * z - 0.5) * 16).astype(int)),
                 tuple(np.round(((top + 0.5) * z - 0.5) * 16).astype(int)), colour, thick, cv2.LINE_AA, shift=4)
        if label is not None:
            cv2.putText(image, label, (int(c[0] * z) + 4, int(c[1] * z) - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (0, 255, 255), 1, cv2.LINE_AA)

    view = cv2.resize(frame, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA) if zoom < 1 else frame.copy()
    for i, inst in enumerate(entry["instances"]):
        draw(view, inst["pasted"], (0, 0, 255), 1, zoom)
        draw(view, inst, (0, 255, 0), 1, zoom, label=str(i))
    if entry.get("best_false_at"):
        cx, cy, a, s = entry["best_false_at"]
        draw(view, {"cx": cx, "cy": cy, "angle": a, "scale": s}, (0, 255, 255), 1, zoom, label="F")
    side = max(w, h) * scene.scales[1]
    if side < 120:
        # Zoomed so that a tile holds the turned part with a margin.
        tile = 200
        z = tile / (1.5 * math.hypot(w, h) * scene.scales[1])
        half = tile / z / 2.0
        tiles = []
        for i, inst in enumerate(entry["instances"]):
            x0, y0 = inst["pasted"]["cx"] - half, inst["pasted"]["cy"] - half
            # Pixel-centre aligned nearest-neighbour zoom of the region at (x0, y0).
            matrix = np.float32([[z, 0, z * (-x0 + 0.5) - 0.5], [0, z, z * (-y0 + 0.5) - 0.5]])
            crop = cv2.warpAffine(frame, matrix, (tile, tile), flags=cv2.INTER_NEAREST)
            draw(crop, inst["pasted"], (0, 0, 255), 1, z, (x0, y0))
            draw(crop, inst, (0, 255, 0), 1, z, (x0, y0))
            cv2.putText(crop, str(i), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1, cv2.LINE_AA)
            tiles.append(cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=(255, 255, 255)))
        per_row = max(1, view.shape[1] // tiles[0].shape[1])
        rows = []
        for k in range(0, len(tiles), per_row):
            row = np.hstack(tiles[k:k + per_row])
            rows.append(cv2.copyMakeBorder(row, 0, 0, 0, view.shape[1] - row.shape[1], cv2.BORDER_CONSTANT))
        view = np.vstack([view] + rows)
    cv2.imwrite(str(path), view)


# --------------------------------------------------------------------------- main


def dump(truths: dict) -> str:
    """The JSON text: one line per instance, so that it stays small and diffs well."""
    lines = ["{"]
    for k, (name, entry) in enumerate(truths.items()):
        head = {key: value for key, value in entry.items() if key != "instances"}
        lines.append(f"  {json.dumps(name)}: {{")
        lines += [f"    {json.dumps(key)}: {json.dumps(value)}," for key, value in head.items()]
        lines.append('    "instances": [')
        body = [f"      {json.dumps(inst, separators=(', ', ': '))}" for inst in entry["instances"]]
        lines.append(",\n".join(body))
        lines.append("    ]")
        lines.append("  }" + ("," if k < len(truths) - 1 else ""))
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == json.loads(json.dumps(truths))
    return text


def _run(job: tuple[str, Path | None]) -> tuple[str, dict, list[str], float, float]:
    """One scene's truth (in a worker): (name, entry, report lines, build seconds, truth seconds)."""
    name, render_dir = job
    cv2.setNumThreads(1)  # the scenes run side by side, one per core
    lines: list[str] = []
    t0 = time.perf_counter()
    scene = pose_scenes.build(name)
    built = time.perf_counter() - t0
    lines.append(f"{name}: {scene.description} (built in {built:.2f} s)")
    t1 = time.perf_counter()
    entry = truth(scene, log=lines.append)
    took = time.perf_counter() - t1
    if render_dir is not None:
        render_dir.mkdir(parents=True, exist_ok=True)
        render(scene, entry, render_dir / f"{name}.png")
    return name, entry, lines, built, took


#: The slowest scenes first, so that two workers finish together.
_COST_ORDER = ["scaled", "colour", "tiny_12mp", "clipped", "thin", "many_small", "camera_blur", "clutter",
               "large_12mp", "touching", "near_symmetric", "flat_centre"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", help="comma-separated scene names (default: all); the JSON is updated")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--render", type=Path, help="draw each scene with its truth into this folder")
    parser.add_argument("--jobs", type=int, default=2, help="scenes searched at once (default 2)")
    args = parser.parse_args(argv)
    chosen = args.scenes.split(",") if args.scenes else pose_scenes.names()
    unknown = set(chosen) - set(pose_scenes.names())
    if unknown:
        parser.error(f"no such scenes: {', '.join(sorted(unknown))}")
    chosen.sort(key=lambda n: _COST_ORDER.index(n) if n in _COST_ORDER else -1)
    result = {}
    if args.scenes and args.out.exists():
        result = json.loads(args.out.read_text())
    flagged = []
    total = time.perf_counter()
    jobs = [(name, args.render) for name in chosen]
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(args.jobs, maxtasksperchild=1) as pool:
            outcomes = pool.imap_unordered(_run, jobs)
            for name, entry, lines, built, took in outcomes:
                print("\n".join(lines) + f"\n  ({name}: truth {took:.0f} s)", flush=True)
                result[name] = entry
    else:
        for job in jobs:
            name, entry, lines, built, took = _run(job)
            print("\n".join(lines) + f"\n  ({name}: truth {took:.0f} s)", flush=True)
            result[name] = entry
    ordered = {n: result[n] for n in pose_scenes.names() if n in result}
    for name, entry in ordered.items():
        flagged += [(name, i) for i, inst in enumerate(entry["instances"]) if inst["flag"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump(ordered))
    print(f"\n{'scene':15s} {'n':>3s} {'min':>7s} {'max':>7s} {'twin':>7s} {'false':>7s} {'d px':>6s} {'d deg':>6s} "
          f"{'d scale':>7s}")
    for name, entry in ordered.items():
        inst = entry["instances"]
        print(f"{name:15s} {len(inst):3d} {min(i['score'] for i in inst):7.4f} {max(i['score'] for i in inst):7.4f} "
              f"{max(i['twin'] for i in inst):7.4f} {entry['best_false']:7.4f} "
              f"{max(i['diff']['px'] for i in inst):6.3f} {max(i['diff']['deg'] for i in inst):6.3f} "
              f"{max(abs(i['diff']['scale']) for i in inst):7.4f}")
    print(f"flagged: {flagged or 'none'}; {time.perf_counter() - total:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
