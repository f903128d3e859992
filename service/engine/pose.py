"""Pose search: a template found at any rotation and scale, coarse to fine.

Matching every rotation and scale of a template at full resolution costs one
map per pose. Instead (after the Fastest_Image_Pattern_Matching approach, our
own code): frame and template are halved into a pyramid until the template's
area would drop under about ``TOP_AREA`` pixels; the whole angle and scale
range is searched only on that top level, at ``TOP_SPREAD`` steps of about
atan(2 / side) (a pixel of movement at the template's rim), by the bank
Matcher, each pose masked to the disc inscribed in the template (one mask for
every angle: the window statistics are computed once). The few best places
go down the levels, each searched within a pixel and a step of angle and
scale (hill-climbing where the best lies on that neighbourhood's edge), to
the level where the template keeps at most ``FINISH_AREA`` pixels. There the
angle and scale come from parabolas through neighbouring scores, and the
position from the template itself drawn at sub-pixel shifts (pose_template),
fitted again with angle and scale until they settle.

Conventions: ``angle`` in degrees, counter-clockwise as displayed (OpenCV's
getRotationMatrix2D); ``cx, cy`` the template's centre in frame pixels, the
centre of the top-left pixel being (0, 0); ``width, height`` the scaled
template's sides (the rotated box, not its axis-aligned hull). Scores are
similarities: ``ccoeff_normed`` and ``ccorr_normed`` as they are, 1 minus the
distance for ``sqdiff_normed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from . import options
from .kept import Kept
from .matcher import Cancelled, Matcher
from .pose_scores import keep_best, parabola, quadric_peak, window_scores
from .pose_template import PoseTemplate, odd_side, pyramid

#: The top level is the coarsest at which the template keeps about 256 pixels
#: (a 64x64 template at scales about 1 goes up two levels, to 16x16).
TOP_AREA = 225
#: The top level's grid is this many of its steps apart (atan(2 / side) and the
#: like for scale); the level below searches as far either side.
TOP_SPREAD = 2
#: The same for scale (3 measured 20% faster with 4 templates, but 2% worst scale error where 2 gives 0.6%).
TOP_SCALE_SPREAD = 2
#: Methods pose search takes (similarities after the sqdiff_normed flip).
POSE_METHODS = ("ccoeff_normed", "ccorr_normed", "sqdiff_normed")
#: A top-level grid of more poses than this is screened every other pixel.
LARGE_GRID = 256
#: Poses are finished (sub-pixel, sub-step) where the template keeps at most this many pixels.
FINISH_AREA = 256 * 256
#: A tracked pose that loses more than this much score is taken for lost (see PoseSearch.track).
TRACK_DROP = 0.15
#: The smallest template side that rotates meaningfully.
MIN_POSE_SIDE = 8
#: Rotated, scaled variants kept per PoseSearch (the coarse levels' are made once).
VARIANTS_KEPT = 4096
#: Bytes of variants one search keeps at most (tracking makes new ones at every fitted pose).
VARIANT_BYTES_KEPT = 32 << 20
# The step (pixels) of the final sub-pixel position fit.
_NUDGE = 0.25
# Moves of the hill climb of a refinement (see PoseSearch._refine).
_CLIMBS = 4
# Rounds of the final angle, scale and position fits, at most.
_FINISH_ROUNDS = 4
# How much finishing may raise a grid pose's score: candidates this far under min_score are finished too.
_FINISH_GAIN = 0.05

_METHOD = {"ccoeff_normed": 0, "ccorr_normed": 1, "sqdiff_normed": 2}


@dataclass(frozen=True)
class Pose:
    """One found pose of a template.

    Attributes
    ----------
    cx, cy : float
        The template's centre in frame pixels (sub-pixel).
    angle : float
        Degrees, counter-clockwise as displayed, in [-180, 180).
    scale : float
        The template's scale.
    score : float
        Similarity at the pose (higher is better).
    width, height : float
        The scaled template's sides (the rotated box).
    """

    cx: float
    cy: float
    angle: float
    scale: float
    score: float
    width: float
    height: float


def _never() -> bool:
    return False


def _check(cancelled: Callable[[], bool]) -> None:
    """Stop the search with :class:`Cancelled` once ``cancelled()`` says so."""
    if cancelled():
        raise Cancelled("the pose search was cancelled")


def _wrap(angle: float) -> float:
    """The angle in [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


def check_ranges(angles: object, scales: object) -> tuple[tuple[float, float], tuple[float, float]]:
    """Validated ``(low, high)`` angle and scale ranges.

    Raises
    ------
    OptionError
        A range that is not two finite numbers, is reversed, or leaves
        [-180, 180] (angles) or (0, 8] (scales).
    """
    checked = []
    for name, value, low, high in (("angles", angles, -180.0, 180.0), ("scales", scales, 0.0, 8.0)):
        try:
            first, last = (float(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise options.OptionError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
        if not (math.isfinite(first) and math.isfinite(last)):
            raise options.OptionError(f"{name} must be finite, got ({first}, {last})")
        if first > last:
            raise options.OptionError(f"{name} range ({first:g}, {last:g}) is reversed: give (low, high)")
        if name == "angles" and (first < low or last > high):
            raise options.OptionError(f"angles ({first:g}, {last:g}) must lie within [-180, 180] degrees")
        if name == "scales" and (first <= low or last > high):
            raise options.OptionError(f"scales ({first:g}, {last:g}) must lie within (0, 8]")
        checked.append((first, last))
    return checked[0], checked[1]


def _steps(low: float, high: float, step: float, circle: bool) -> np.ndarray:
    """Evenly spaced samples of [low, high] at most ``step`` apart (of [low, low + 360) on a full circle)."""
    span = high - low
    if span <= 0.0:
        return np.array([low])
    if circle:
        count = max(1, math.ceil(360.0 / step))
        return low + np.arange(count) * (360.0 / count)
    count = max(1, math.ceil(span / step))
    return low + np.arange(count + 1) * (span / count)


def _levels(smallest_area: int, scale_range: tuple[float, float]) -> int:
    """Pyramid levels above the frame: the coarsest where the smallest template (of ``smallest_area``
    pixels), at the range's middle scale, keeps TOP_AREA pixels."""
    middle = math.sqrt(scale_range[0] * scale_range[1])
    return max(0, int(math.floor(math.log(max(smallest_area * middle ** 2 / TOP_AREA, 1.0), 4))))


def _angle_step(side: float, largest_scale: float) -> float:
    """Degrees that move the rim of a template of ``side`` pixels (at its largest scale) about one pixel."""
    return math.degrees(math.atan(2.0 / max(side * largest_scale, 2.0)))


def _scale_step(side: float, largest_scale: float) -> float:
    """A relative step of scale: the rim moves about one pixel."""
    return 1.0 / max(side * largest_scale / 2.0, 1.0)


def _top_scales(scale_range: tuple[float, float], scale_step: float) -> np.ndarray:
    """The top level's scales: ``TOP_SCALE_SPREAD`` steps apart, geometrically, both ends included."""
    low, high = scale_range
    if high <= low:
        return np.array([low])
    count = max(1, math.ceil(math.log(high / low) / math.log1p(TOP_SCALE_SPREAD * scale_step)))
    return low * (high / low) ** (np.arange(count + 1) / count)


def grid_size(height: int, width: int, channels: int, angles=(-180.0, 180.0),
              scales=(1.0, 1.0)) -> tuple[int, int]:
    """The poses the top level of a search of one template will try, and its variants' bytes.

    From the template's size and ranges alone, before anything is made, by
    the rules :class:`PoseSearch` builds its grid with (the same functions):
    what a service admits or refuses by. The bytes count each variant twice
    (the variant and its kernel in the top level's bank).
    """
    angle_range, scale_range = check_ranges(angles, scales)
    levels = _levels(height * width, scale_range)
    side = max(height, width) / 2.0 ** levels
    circle = angle_range[1] - angle_range[0] >= 360.0
    count_angles = len(_steps(*angle_range, TOP_SPREAD * _angle_step(side, scale_range[1]), circle))
    top_scales = _top_scales(scale_range, _scale_step(side, scale_range[1]))
    nbytes = 0
    for scale in top_scales:
        canvas = odd_side(min(height, width) * scale / 2.0 ** levels / 2.0)  # the disc's canvas
        nbytes += 2 * canvas * canvas * 4 * (channels + 1) * count_angles
    return count_angles * len(top_scales), nbytes


@dataclass
class _Candidate:
    template: int
    cx: float  # at the current level, pixels
    cy: float
    angle: float
    scale: float
    score: float


class PoseSearch:
    """Templates prepared for search at any rotation and scale.

    Parameters
    ----------
    template : numpy.ndarray or sequence of numpy.ndarray
        HxW or HxWxC (uint8, float32, float64), at least ``MIN_POSE_SIDE``
        pixels a side. A list: the templates share each level's frame work,
        and :meth:`search` returns one list of poses per template.
    mask : numpy.ndarray or sequence, optional
        The template's mask (non-zero counts), or one per template.
    angles : (float, float)
        The angle range in degrees, within [-180, 180]; (-180, 180) is the
        full circle.
    scales : (float, float)
        The scale range, within (0, 8].
    method : str
        ``ccoeff_normed`` (default), ``ccorr_normed`` or ``sqdiff_normed``.

    Notes
    -----
    Safe to call from several threads at once.
    """

    def __init__(self, template, mask=None, angles=(-180.0, 180.0), scales=(1.0, 1.0),
                 method: str = "ccoeff_normed") -> None:
        if method not in POSE_METHODS:
            raise options.OptionError(f"pose search takes {', '.join(POSE_METHODS)}, not {method!r}")
        self.method = method
        self.angle_range, self.scale_range = check_ranges(angles, scales)
        self._many = isinstance(template, Sequence) and not isinstance(template, np.ndarray)
        templates = list(template) if self._many else [template]
        if not templates:
            raise options.OptionError("template is empty: give at least one template")
        if mask is None:
            masks = [None] * len(templates)
        elif self._many:
            if isinstance(mask, np.ndarray) or len(mask) != len(templates):
                raise options.OptionError(f"mask must be a list with one entry per template ({len(templates)})")
            masks = list(mask)
        else:
            masks = [mask]
        images = [options.as_image(t, f"template {i}") for i, t in enumerate(templates)]
        if len({img.shape[2] for img in images}) > 1:
            raise options.OptionError("templates have different channel counts: convert them to the frames' one")
        self.channels = images[0].shape[2]
        weights = [None if m is None else options.as_mask(m, img.shape[:2], f"mask {i}")
                   for i, (m, img) in enumerate(zip(masks, images))]
        for i, img in enumerate(images):
            if min(img.shape[:2]) * self.scale_range[0] < MIN_POSE_SIDE:
                raise options.OptionError(
                    f"template {i} ({img.shape[1]}x{img.shape[0]}) is under {MIN_POSE_SIDE} pixels a side at "
                    f"scale {self.scale_range[0]:g}: too small to rotate meaningfully")
        # Levels for the smallest template at the range's middle scale.
        self.levels = _levels(min(img.shape[0] * img.shape[1] for img in images), self.scale_range)
        # The level poses are finished at: where the largest template keeps at
        # most FINISH_AREA pixels (sub-pixel there is ~0.01 of its pixel; at
        # full resolution a 700x500 template's fits cost seconds).
        largest = max(img.shape[0] * img.shape[1] * self.scale_range[1] ** 2 for img in images)
        self._finish_level = min(self.levels, max(0, math.ceil(math.log(max(largest / FINISH_AREA, 1.0), 4))))
        self._templates = [PoseTemplate(img, w, self.levels) for img, w in zip(images, weights)]
        self._circle = self.angle_range[1] - self.angle_range[0] >= 360.0
        self._variants: Kept[tuple[np.ndarray, np.ndarray]] = Kept(
            VARIANTS_KEPT, max_bytes=VARIANT_BYTES_KEPT, size=lambda v: v[0].nbytes + v[1].nbytes)
        # The top level's grid of poses, matched as one bank.
        self._grid: list[tuple[int, float, float]] = []
        images_top, masks_top = [], []
        for index, template_ in enumerate(self._templates):
            for angle in self._angles(self.levels, template_):
                for scale in self._scales(self.levels, template_):
                    image, mask_ = self._variant(index, self.levels, angle, scale, disc=True)
                    self._grid.append((index, float(angle), float(scale)))
                    images_top.append(image)
                    masks_top.append(mask_.astype(np.uint8))
        # A large grid (several templates, scales) is screened every other
        # top-level pixel: a quarter of the work; the level below then looks
        # two pixels either side.
        self._top_stride = 2 if len(self._grid) > LARGE_GRID else 1
        self._bank = Matcher(images_top, masks=masks_top, method=method, stride=self._top_stride)
        # The grid by template and canvas: (template, (h, w), indices into the grid).
        shapes: dict[tuple, list[int]] = {}
        for i, ((index, _, _), (h, w)) in enumerate(zip(self._grid, self._bank.shapes)):
            shapes.setdefault((index, (h, w)), []).append(i)
        self._shape_groups = [(index, shape, np.array(members)) for (index, shape), members in shapes.items()]

    def __len__(self) -> int:
        return len(self._templates)

    def retained_bytes(self) -> int:
        """What this search keeps between calls: its variants and its top-level bank's plans."""
        return self._variants.nbytes() + self._bank.retained_bytes()

    def memory_estimate(self, frame_shape: tuple[int, int]) -> int:
        """Bytes a search of a frame of ``frame_shape`` (H, W) holds at most, from the shapes alone.

        The frame's pyramid (float32, a third more than the frame), and the
        top level's bank over that level (its maps for every pose, its work
        arrays and the kernel spectra its plan keeps): the bulk of a search.
        """
        height, width = frame_shape
        pyramid_bytes = height * width * self.channels * 4 * 4 // 3
        top = (max(1, height >> self.levels), max(1, width >> self.levels))
        if any(h > top[0] or w > top[1] for h, w in self._bank.shapes):
            return pyramid_bytes + sum(4 * top[0] * top[1] for _ in self._bank.shapes)
        working, retained = self._bank.memory_estimate(top)
        return pyramid_bytes + working + retained

    # -- the pose grid ------------------------------------------------------

    def _angle_step(self, level: int, template: PoseTemplate) -> float:
        return _angle_step(template.side(level), self.scale_range[1])

    def _scale_step(self, level: int, template: PoseTemplate) -> float:
        return _scale_step(template.side(level), self.scale_range[1])

    def _angles(self, level: int, template: PoseTemplate) -> np.ndarray:
        """The top level's angles: ``TOP_SPREAD`` steps apart (the level below searches that far either side)."""
        low, high = self.angle_range
        return _steps(low, high, TOP_SPREAD * self._angle_step(level, template), self._circle)

    def _scales(self, level: int, template: PoseTemplate) -> np.ndarray:
        return _top_scales(self.scale_range, self._scale_step(level, template))

    def _variant(self, index: int, level: int, angle: float, scale: float,
                 disc: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return self._variants.get((index, level, round(angle, 6), round(scale, 8), disc),
                                  lambda: self._templates[index].variant(level, angle, scale, disc))

    def _clamp(self, angle: float, scale: float) -> tuple[float, float]:
        if not self._circle:
            angle = min(max(angle, self.angle_range[0]), self.angle_range[1])
        return _wrap(angle) if self._circle else angle, min(max(scale, self.scale_range[0]), self.scale_range[1])

    # -- search ---------------------------------------------------------------

    def _frame(self, frame: np.ndarray) -> list[np.ndarray]:
        image = options.as_image(frame, "frame")
        if image.shape[2] != self.channels:
            raise options.OptionError(f"frame has {image.shape[2]} channel(s) but the templates have {self.channels}")
        if not np.isfinite(image).all():
            raise options.OptionError("frame contains NaN or inf")
        return pyramid(image, self.levels)

    def _window(self, level_image: np.ndarray, index: int, level: int, cx: float, cy: float, angle: float,
                scale: float, reach: int, shift: tuple[float, float] | None = None) -> tuple[np.ndarray, int, int] | None:
        """Scores of one pose's variant at the positions within ``reach`` of (cx, cy), rounded; with the first position.

        With ``shift``, the variant is made afresh with its centre that far off the canvas's (not kept).
        """
        if shift is None:
            image, weights = self._variant(index, level, angle, scale)
        else:
            image, weights = self._templates[index].variant(level, angle, scale, shift=shift)
        h, w = weights.shape
        x0 = int(round(cx)) - reach - w // 2
        y0 = int(round(cy)) - reach - h // 2
        height, width = level_image.shape[:2]
        # Keep the window's positions where the whole variant lies in the frame.
        left, top = max(x0, 0), max(y0, 0)
        right = min(x0 + 2 * reach + w, width)
        bottom = min(y0 + 2 * reach + h, height)
        if right - left < w or bottom - top < h:
            return None
        out = np.empty((bottom - top - h + 1, right - left - w + 1))
        window_scores(level_image[top:bottom, left:right], image, weights, _METHOD[self.method], out)
        return out, left + w // 2, top + h // 2

    def _refine(self, pyramid: list[np.ndarray], cand: _Candidate, level: int, reach: int,
                angle_step: float, scale_step: float, spread: tuple[int, int] = (1, 1)) -> _Candidate | None:
        """The best pose at ``level`` within ``reach`` pixels and ``spread`` (angle, scale) steps of ``cand``.

        Where the best lies on the edge of that neighbourhood (the coarser
        level was further off than its step), the search moves there and
        goes on, a few times at most: a hill climb on the grid of this level.
        """
        best = None
        seen: set[tuple[float, float]] = set()
        for _ in range(_CLIMBS):
            centre = best or cand
            angles = [centre.angle + i * angle_step for i in range(-spread[0], spread[0] + 1)]
            if self.scale_range[1] > self.scale_range[0]:
                scales = [centre.scale * (1.0 + scale_step) ** i for i in range(-spread[1], spread[1] + 1)]
            else:
                scales = [centre.scale]
            edge = None
            for i, angle in enumerate(angles):
                for j, scale in enumerate(scales):
                    angle_c, scale_c = self._clamp(angle, scale)
                    if (round(angle_c, 9), round(scale_c, 12)) in seen:
                        continue
                    seen.add((round(angle_c, 9), round(scale_c, 12)))
                    window = self._window(pyramid[level], cand.template, level, centre.cx, centre.cy, angle_c,
                                          scale_c, reach)
                    if window is None:
                        continue
                    scores, x0, y0 = window
                    at = np.unravel_index(int(np.argmax(scores)), scores.shape)
                    value = float(scores[at])
                    if best is None or value > best.score:
                        best = _Candidate(cand.template, x0 + at[1], y0 + at[0], angle_c, scale_c, value)
                        edge = (i in (0, len(angles) - 1) and len(angles) > 1) or \
                            (j in (0, len(scales) - 1) and len(scales) > 1)
            if not edge:
                break
        return best

    def _finish(self, pyramid: list[np.ndarray], cand: _Candidate) -> Pose | None:
        """Sub-step angle and scale (parabolas), then the sub-pixel position (quadric) at level 0."""
        template = self._templates[cand.template]
        level = self._finish_level
        unit = 2.0 ** level  # frame pixels per pixel of this level
        level_image = pyramid[level]
        angle_step = self._angle_step(level, template) / 2.0
        scale_step = self._scale_step(level, template) / 2.0

        def score_at(angle: float, scale: float) -> float:
            angle, scale = self._clamp(angle, scale)
            window = self._window(level_image, cand.template, level, cand.cx, cand.cy, angle, scale, 1)
            return -np.inf if window is None else float(window[0].max())

        angle, scale = cand.angle, cand.scale
        centre = score_at(angle, scale)
        if not np.isfinite(centre):
            return None
        left, right = score_at(angle - angle_step, scale), score_at(angle + angle_step, scale)
        if max(left, right) > centre:  # the best sample is a neighbour: move there first
            angle += angle_step if right > left else -angle_step
            centre, left, right = (right, centre, score_at(angle + angle_step, scale)) if right > left else \
                (left, score_at(angle - angle_step, scale), centre)
        if all(np.isfinite((left, centre, right))):
            angle += parabola(left, centre, right) * angle_step
        if self.scale_range[1] > self.scale_range[0]:
            down, up = score_at(angle, scale / (1.0 + scale_step)), score_at(angle, scale * (1.0 + scale_step))
            middle = score_at(angle, scale)
            if all(np.isfinite((down, middle, up))):
                scale *= (1.0 + scale_step) ** parabola(down, middle, up)
        angle, scale = self._clamp(angle, scale)
        # The peak's pixel: the 3x3 scores around it (moving there if it is not central).
        cx, cy = int(round(cand.cx)), int(round(cand.cy))
        for _ in range(3):
            window = self._window(level_image, cand.template, level, cx, cy, angle, scale, 1)
            if window is None:
                return None
            scores, x0, y0 = window
            y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
            if scores.shape != (3, 3) or (y, x) == (1, 1):
                break
            cx, cy = x0 + x, y0 + y
        if scores.shape != (3, 3) or (y, x) != (1, 1):  # at the frame's edge: no sub-pixel fit
            return Pose(cx=float(x0 + x) * unit, cy=float(y0 + y) * unit, angle=_wrap(angle) if self._circle else angle,
                        scale=scale, score=float(scores[y, x]), width=template.width * scale,
                        height=template.height * scale)
        dx, dy, value = quadric_peak(scores)
        # Then angle, scale and position again, the template drawn at the
        # sub-pixel estimate: sampled as the frame was, its scores are
        # symmetric about the true pose and the fits lose their bias.
        fine_angle, fine_scale = angle_step / 2.0, scale_step / 2.0

        seen: dict[tuple[float, float, float, float], float] = {}

        def centre_score(angle_: float, scale_: float, shift: tuple[float, float]) -> float:
            angle_, scale_ = self._clamp(angle_, scale_)
            key = (angle_, scale_, *shift)
            if key not in seen:
                window = self._window(level_image, cand.template, level, cx, cy, angle_, scale_, 0, shift)
                seen[key] = -np.inf if window is None else float(window[0][0, 0])
            return seen[key]

        for _ in range(_FINISH_ROUNDS):
            shift = (dx, dy)
            before = (angle, scale, dx, dy)
            middle = centre_score(angle, scale, shift)
            left, right = centre_score(angle - fine_angle, scale, shift), centre_score(angle + fine_angle, scale, shift)
            if all(np.isfinite((left, middle, right))):
                angle += parabola(left, middle, right) * fine_angle
            if self.scale_range[1] > self.scale_range[0]:
                down = centre_score(angle, scale / (1.0 + fine_scale), shift)
                up = centre_score(angle, scale * (1.0 + fine_scale), shift)
                middle = centre_score(angle, scale, shift)
                if all(np.isfinite((down, middle, up))):
                    scale *= (1.0 + fine_scale) ** parabola(down, middle, up)
            angle, scale = self._clamp(angle, scale)
            # The position as the template's own sub-pixel shift: the scores
            # then cover the same pixels on both sides (a 3x3 fit's do not,
            # and a masked window's edges made it lean by up to 0.1 px).
            middle = centre_score(angle, scale, (dx, dy))
            left, right = centre_score(angle, scale, (dx - _NUDGE, dy)), centre_score(angle, scale, (dx + _NUDGE, dy))
            if all(np.isfinite((left, middle, right))):
                dx += parabola(left, middle, right) * _NUDGE
            up, down = centre_score(angle, scale, (dx, dy - _NUDGE)), centre_score(angle, scale, (dx, dy + _NUDGE))
            middle = centre_score(angle, scale, (dx, dy))
            if all(np.isfinite((up, middle, down))):
                dy += parabola(up, middle, down) * _NUDGE
            value = max(value, middle)
            if abs(dx) > 1.0 or abs(dy) > 1.0:
                break
            moved = (abs(angle - before[0]) / fine_angle, abs(scale / before[1] - 1.0) / max(fine_scale, 1e-12),
                     abs(dx - before[2]) / _NUDGE, abs(dy - before[3]) / _NUDGE)
            if max(moved) < 0.05:  # settled: under a twentieth of a step everywhere
                break
        return Pose(cx=float(cx + dx) * unit, cy=float(cy + dy) * unit,
                    angle=float(_wrap(angle) if self._circle else angle),
                    scale=float(scale), score=float(value), width=template.width * float(scale),
                    height=template.height * float(scale))

    def _descend(self, pyramid: list[np.ndarray], cand: _Candidate, level: int,
                 cancelled: Callable[[], bool] = _never) -> _Candidate | None:
        """Carry a candidate found at ``level`` down to the finishing level (whole pixels, grid steps)."""
        template = self._templates[cand.template]
        current: _Candidate | None = cand
        for below in range(level - 1, self._finish_level - 1, -1):
            _check(cancelled)
            current = _Candidate(current.template, current.cx * 2.0, current.cy * 2.0, current.angle,
                                 current.scale, current.score)
            # The coarser level's peak is within half its pixel: one pixel here
            # (two below a top level screened every other pixel).
            reach = self._top_stride if below == self.levels - 1 else 1
            current = self._refine(pyramid, current, below, reach, self._angle_step(below, template),
                                   self._scale_step(below, template),
                                   (TOP_SPREAD, TOP_SCALE_SPREAD) if below == self.levels - 1 else (1, 1))
            if current is None:
                return None
        return current

    def _conclude(self, pyramid: list[np.ndarray], found: list[_Candidate], top_k: int, min_score: float,
                  max_overlap: float, cancelled: Callable[[], bool] = _never) -> list[Pose]:
        """Finish the best level-0 candidates to sub-pixel, sub-step poses, and select among them.

        Only those that can still make the cut are finished (the finish moves a
        score by little: it samples between the grid's steps).
        """
        rough = {id(c): self._rough(c) for c in found}
        chosen = self._select(list(rough.values()), top_k, min_score - _FINISH_GAIN, max_overlap)
        finished = [_check(cancelled) or self._finish(pyramid, c) for c in found if rough[id(c)] in chosen]
        return self._select([p for p in finished if p is not None], top_k, min_score, max_overlap)

    def _rough(self, cand: _Candidate) -> Pose:
        template = self._templates[cand.template]
        unit = 2.0 ** self._finish_level
        return Pose(cx=float(cand.cx) * unit, cy=float(cand.cy) * unit, angle=float(cand.angle), scale=float(cand.scale),
                    score=float(cand.score), width=template.width * float(cand.scale),
                    height=template.height * float(cand.scale))

    def _top_candidates(self, pyramid: list[np.ndarray], count: int,
                        cancelled: Callable[[], bool] = _never) -> list[list[_Candidate]]:
        """The ``count`` best poses of each template on the top level, apart from each other."""
        top = pyramid[self.levels]
        height, width = top.shape[:2]
        best = np.full((len(self._templates), height, width), -np.inf, np.float32)
        which = np.full(best.shape, -1, np.int64)
        fits = [h <= height and w <= width for h, w in self._bank.shapes]
        if not any(fits):
            smallest = min(self._bank.shapes, key=lambda shape: shape[0] * shape[1])
            raise options.OptionError(
                f"no pose fits the frame: at its smallest scale a template's rotated canvas is {smallest[1]}x"
                f"{smallest[0]} at the search's top level, where the frame is {width}x{height}; send larger "
                "frames or smaller scales")
        maps = self._bank(top, cancelled=cancelled) if all(fits) else None
        for index, (h, w), members in self._shape_groups:
            _check(cancelled)
            if h > height or w > width:
                continue  # this template at this scale is larger than the frame
            if maps is None:  # a frame too small for some variants: match those that fit
                variants = [self._variant(self._grid[i][0], self.levels, self._grid[i][1], self._grid[i][2], disc=True)
                            for i in members]
                stack = np.stack(Matcher([image for image, _ in variants],
                                         masks=[weights.astype(np.uint8) for _, weights in variants],
                                         method=self.method, stride=self._top_stride)(top))
            else:
                stack = np.stack([maps[i] for i in members])
            if self.method == "sqdiff_normed":
                stack = 1.0 - stack
            # Every variant of one template and scale has the same (disc) canvas: the best angle per position.
            step = self._top_stride
            rows = slice(h // 2, h // 2 + step * stack.shape[1], step)
            cols = slice(w // 2, w // 2 + step * stack.shape[2], step)
            keep_best(stack, members, best[index, rows, cols], which[index, rows, cols])
        out = []
        for index, template in enumerate(self._templates):
            radius = max(1, int(0.5 * min(template.height, template.width) * self.scale_range[0]
                                / 2.0 ** self.levels))
            scores = best[index]
            found = []
            while len(found) < count:
                at = int(np.argmax(scores))
                y, x = divmod(at, width)
                value = float(scores[y, x])
                if not np.isfinite(value):
                    break
                _, angle, scale = self._grid[int(which[index, y, x])]
                found.append(_Candidate(index, float(x), float(y), angle, scale, value))
                scores[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1] = -np.inf
            out.append(found)
        return out

    def _select(self, poses: list[Pose], top_k: int, min_score: float, max_overlap: float) -> list[Pose]:
        """The best poses over ``min_score`` whose boxes overlap no better one by more than ``max_overlap`` (IoU)."""
        kept: list[Pose] = []
        for pose in sorted(poses, key=lambda p: -p.score):
            if pose.score < min_score or len(kept) >= top_k:
                continue
            if all(_overlap(pose, other) <= max_overlap for other in kept):
                kept.append(pose)
        return kept

    def search(self, frame: np.ndarray, top_k: int = 1, min_score: float = 0.5, max_overlap: float = 0.5,
               cancelled: Callable[[], bool] | None = None):
        """Find each template's best poses in ``frame``.

        Parameters
        ----------
        frame : numpy.ndarray
            HxW or HxWxC, the templates' channel count; uint8, float32 or float64.
        top_k : int
            At most this many poses per template.
        min_score : float
            Poses scoring below are dropped.
        max_overlap : float
            Poses whose rotated boxes overlap a better one by more than this
            (intersection over union) are dropped.
        cancelled : callable, optional
            Asked between the top level's groups of poses, between levels and
            between candidates; when it returns True the search stops with
            :class:`Cancelled` (a caller gone, a deadline passed, a server
            shutting down).

        Returns
        -------
        list of Pose, or one such list per template when templates were given as a list.
        """
        top_k, min_score, max_overlap = _check_search(top_k, min_score, max_overlap)
        pyramid = self._frame(frame)
        results = self._global(pyramid, top_k, min_score, max_overlap, cancelled or _never)
        return results if self._many else results[0]

    def track(self, frame: np.ndarray, previous, top_k: int = 1, min_score: float = 0.5,
              max_overlap: float = 0.5, reach: int = 16, cancelled: Callable[[], bool] | None = None):
        """Find the templates near their previous poses first; search globally where that fails.

        Parameters
        ----------
        frame : numpy.ndarray
            The next frame.
        previous : list of Pose, or one list per template
            The poses of the last frame (as :meth:`search` or :meth:`track` returned them).
        reach : int
            How far (frame pixels) a template may have moved since.
        cancelled : callable, optional
            As for :meth:`search`.

        Returns
        -------
        As :meth:`search`. A template is searched globally where it had no
        poses, or where a pose found near a previous one scores under
        ``min_score`` or has lost more than ``TRACK_DROP`` of its score (the
        template has gone and the neighbourhood offers only look-alikes).
        """
        top_k, min_score, max_overlap = _check_search(top_k, min_score, max_overlap)
        if not isinstance(reach, int | np.integer) or isinstance(reach, bool) or reach < 1:
            raise options.OptionError(f"reach must be a positive whole number of pixels, got {reach!r}")
        lists = list(previous) if self._many else [previous]
        if len(lists) != len(self._templates) or not all(isinstance(p, list | tuple) for p in lists):
            raise options.OptionError(f"previous must hold one list of poses per template ({len(self._templates)})")
        pyramid = self._frame(frame)
        cancelled = cancelled or _never
        level = min(self._finish_level + 1, self.levels)
        results: list[list[Pose] | None] = []
        for index, poses in enumerate(lists):
            template = self._templates[index]
            found = []
            for pose in poses:
                if not isinstance(pose, Pose):
                    raise options.OptionError("previous must hold Pose objects")
                _check(cancelled)
                start = _Candidate(index, pose.cx / 2.0 ** level, pose.cy / 2.0 ** level, pose.angle,
                                   min(max(pose.scale, self.scale_range[0]), self.scale_range[1]), pose.score)
                near = self._refine(pyramid, start, level, max(1, math.ceil(reach / 2.0 ** level)),
                                    self._angle_step(level, template), self._scale_step(level, template))
                refined = None if near is None else self._descend(pyramid, near, level, cancelled)
                if refined is None or refined.score < max(min_score, pose.score - TRACK_DROP):
                    found = []  # lost: the global search decides
                    break
                found.append(refined)
            kept = self._conclude(pyramid, found, top_k, min_score, max_overlap, cancelled)
            results.append(kept if kept else None)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            fresh = self._global(pyramid, top_k, min_score, max_overlap, cancelled)
            for i in missing:
                results[i] = fresh[i]
        out = [r if r is not None else [] for r in results]
        return out if self._many else out[0]

    def _global(self, pyramid, top_k, min_score, max_overlap, cancelled: Callable[[], bool]) -> list[list[Pose]]:
        results = []
        for candidates in self._top_candidates(pyramid, top_k + 2, cancelled):
            found = [c for c in (self._descend(pyramid, c, self.levels, cancelled) for c in candidates)
                     if c is not None]
            results.append(self._conclude(pyramid, found, top_k, min_score, max_overlap, cancelled))
        return results


def _check_search(top_k: object, min_score: object, max_overlap: object) -> tuple[int, float, float]:
    if not isinstance(top_k, int | np.integer) or isinstance(top_k, bool) or top_k < 1:
        raise options.OptionError(f"top_k must be a positive whole number, got {top_k!r}")
    for name, value in (("min_score", min_score), ("max_overlap", max_overlap)):
        if not isinstance(value, int | float | np.floating) or isinstance(value, bool) or not math.isfinite(value):
            raise options.OptionError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= float(max_overlap) <= 1.0:
        raise options.OptionError(f"max_overlap must be between 0 and 1, got {max_overlap}")
    return int(top_k), float(min_score), float(max_overlap)


def _overlap(a: Pose, b: Pose) -> float:
    """Intersection over union of two poses' rotated boxes."""
    box_a = ((float(a.cx), float(a.cy)), (float(a.width), float(a.height)), -float(a.angle))
    box_b = ((float(b.cx), float(b.cy)), (float(b.width), float(b.height)), -float(b.angle))
    kind, points = cv2.rotatedRectangleIntersection(box_a, box_b)
    if kind == cv2.INTERSECT_NONE or points is None:
        return 0.0
    inter = float(cv2.contourArea(cv2.convexHull(points)))
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0.0 else 0.0
