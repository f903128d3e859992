"""Pose search: a template found at any rotation and scale, coarse to fine.

Matching every rotation and scale of a template at full resolution costs one
map per pose. Instead (after the Fastest_Image_Pattern_Matching approach, our
own code): frame and template are halved into a pyramid until the template
would drop under ``TOP_AREA`` pixels or ``MIN_TOP_SIDE`` a side; the whole angle and
scale range is searched only on that top level, at ``TOP_SPREAD`` steps of
about atan(2 / side) (a pixel of movement at the template's rim), by the
bank Matcher, each pose masked to the disc inscribed in the template (one
mask for every angle: the window statistics are computed once), or to its
rotated box where the template is elongated (see screens_with_disc).

At each of the best places (place_budget: more in a crowded scene) every
angle that is a local maximum within a margin of the place's best is a
hypothesis, so a part beside a turned neighbour pattern, or a part nearly
symmetric under a half turn, keeps its right angle to the fine levels. The
hypotheses go down the levels, each searched within a pixel and a step of
angle and scale (hill-climbing where the best lies on that neighbourhood's
edge, the angle window widened where the score falls between levels), to
the level where the template keeps at most ``FINISH_AREA`` pixels. There the
angle and scale come from parabolas through neighbouring scores, and the
position from the template itself drawn at sub-pixel shifts (pose.template),
fitted again with angle and scale until they settle; a pose finished on a
coarser level is polished and scored on level 0. A pose's half-turned twin
is scored too: where it comes close, both are finished and level 0 decides,
and the pose says how close (``ambiguity``).

Parts at the frame's edge: the top level is mirrored out, and a window that
reaches past the edge is scored on its visible part; a pose is returned when
at least ``min_visible`` of its box is inside, and says how much (``visible``).

Conventions: ``angle`` in degrees, counter-clockwise as displayed (OpenCV's
getRotationMatrix2D); ``cx, cy`` the template's centre in frame pixels, the
centre of the top-left pixel being (0, 0); ``width, height`` the scaled
template's sides (the rotated box, not its axis-aligned hull). Scores are
similarities: ``ccoeff_normed`` and ``ccorr_normed`` as they are, 1 minus the
distance for ``sqdiff_normed``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from featuremap import boxes

from .. import options
from ..kept import Kept
from ..matcher import Cancelled, Matcher
from .scores import block_maxima, clipped_scores, keep_best, parabola, quadric_peak, window_scores
from .template import PoseTemplate, canvas_sides, pyramid

#: The top level is the coarsest at which the template keeps this many pixels ...
TOP_AREA = 225
#: ... and this many a side (a 64x64 template at scales about 1 goes up two levels, to 16x16).
MIN_TOP_SIDE = 8
#: Templates whose longer side is at most this many times the shorter are screened through their disc.
DISC_ASPECT = 1.5
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
#: A frame whose top level's pixels times the grid's poses exceed this is screened every other pixel
#: (VGA's top with 100 poses: 2M; 12 MP with a 20 px part's 32: 384M).
TOP_WORK = 32_000_000
#: The smallest template side that rotates meaningfully.
MIN_POSE_SIDE = 8
#: Rotated, scaled variants kept per PoseSearch (the coarse levels' are made once).
VARIANTS_KEPT = 4096
#: Bytes of variants one search keeps at most (tracking makes new ones at every fitted pose).
VARIANT_BYTES_KEPT = 32 << 20
#: The share of a part's box that must lie inside the frame for it to be returned (by default).
MIN_VISIBLE = 0.75
#: The most top-level places a caller may ask a search to carry down per template.
MAX_CANDIDATES = 256
#: Angle hypotheses kept per top-level place, and how far under the place's best one may score.
HYPOTHESES = 3
HYPOTHESIS_MARGIN = 0.15
#: How far (top-level pixels) a place in the edge band is looked around when scored on its visible part:
#: mirrored pixels pull a clipped part's peak to the very edge, up to 3 pixels off (a 56x28 part).
RESCORE_REACH = 3
#: Edge-band places whose mirrored score is this far under the inside's best are not rescored.
BAND_MARGIN = 0.2
#: Top-level places are at least this share of the template's shorter side apart.
PLACE_SPACING = 0.25
#: Places beyond place_budget's first ones are kept while within this of the top_k-th best.
PLACE_MARGIN = 0.05
#: A score that falls by more than this from one level to the next widens the angle window there.
WIDEN_DROP = 0.1
#: Candidates this far under the top_k-th best at a level are not carried further down.
PRUNE_MARGIN = 0.15
#: A half-turned twin scoring at least this share of the pose (on the finishing level) is finished and compared.
TWIN_MARGIN = 0.8
# The step (pixels) of the final sub-pixel position fit.
_NUDGE = 0.25
# Moves of the hill climb of a refinement (see PoseSearch._refine).
_CLIMBS = 4
# Rounds of the final angle, scale and position fits, at most.
_FINISH_ROUNDS = 4
# How much finishing may raise a grid pose's score: candidates this far under min_score are finished too.
_FINISH_GAIN = 0.05

# Block side of the top map's block maxima, through which places are found.
_PLACE_BLOCK = 32
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
    visible : float
        The share of the template's area inside the frame (1 unless the part
        is clipped at the frame's edge; its score is its visible part's).
    ambiguity : float
        How close the pose's 180-degree twin came: its score over this
        pose's (0 where it was not measured: a search over less than the
        full circle). Near 1 the part is nearly symmetric under a half turn.
    """

    cx: float
    cy: float
    angle: float
    scale: float
    score: float
    width: float
    height: float
    visible: float = 1.0
    ambiguity: float = 0.0


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


def _levels(height: int, width: int, scale_range: tuple[float, float]) -> int:
    """Pyramid levels above the frame for a template of ``height`` x ``width``, at the range's middle scale.

    The coarsest level where it keeps ``TOP_AREA`` pixels and ``MIN_TOP_SIDE``
    a side: a 64x64 template goes up two levels (16x16), a 160x16 bar one
    (80x8: by area alone it went three, to a line; by its shorter side
    alone none, and its 256 masked angles at full size took 14 s on VGA).
    """
    middle = math.sqrt(scale_range[0] * scale_range[1])
    area, short = height * width * middle ** 2, min(height, width) * middle
    levels = 0
    while area / 4.0 ** (levels + 1) >= TOP_AREA and short / 2.0 ** (levels + 1) >= MIN_TOP_SIDE:
        levels += 1
    return levels


def screens_with_disc(height: int, width: int) -> bool:
    """Whether a template's top level is screened through its inscribed disc (one mask for every angle).

    A squat template keeps most of itself in its disc, and every angle then
    shares one set of window statistics. An elongated one (sides over
    ``DISC_ASPECT`` to 1) keeps little (a 56x28 crop with a flat middle: 39%,
    and none of its texture; 0 of 9 copies found), so it is screened through
    its rotated box, a mask per angle.
    """
    return max(height, width) <= DISC_ASPECT * min(height, width)


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
    levels = _levels(height, width, scale_range)
    side = max(height, width) / 2.0 ** levels
    circle = angle_range[1] - angle_range[0] >= 360.0
    top_angles = _steps(*angle_range, TOP_SPREAD * _angle_step(side, scale_range[1]), circle)
    top_scales = _top_scales(scale_range, _scale_step(side, scale_range[1]))
    disc = screens_with_disc(height, width)
    nbytes = 0
    for angle in top_angles:
        for scale in top_scales:
            canvas_h, canvas_w = canvas_sides(height, width, levels, float(angle), float(scale), disc)
            nbytes += 2 * canvas_h * canvas_w * 4 * (channels + 1)
    return len(top_angles) * len(top_scales), nbytes


@dataclass
class _Candidate:
    template: int
    cx: float  # at the current level, pixels
    cy: float
    angle: float
    scale: float
    score: float


@dataclass
class _Frame:
    """One search's frame: its pyramid, and the rules every score on it follows."""

    levels: list[np.ndarray]
    min_visible: float
    cancelled: Callable[[], bool]
    top: _TopGrid


@dataclass
class _TopGrid:
    """The poses a search screens on its top level, as one bank of variants."""

    level: int
    grid: list[tuple[int, float, float]]  # (template, angle, scale) per variant of the bank
    tables: list[np.ndarray]  # per template: its grid indices by (angle, scale)
    bank: Matcher
    stride: int  # the bank's stride: 2 for a large grid
    pad: int  # how far the level is mirrored out where parts may be clipped
    shape_groups: list[tuple[int, tuple[int, int], np.ndarray]]  # (template, canvas, grid indices)


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
        # Levels for the template that can go up least, at the range's middle scale.
        self.levels = min(_levels(img.shape[0], img.shape[1], self.scale_range) for img in images)
        # The level poses are finished at: where the largest template keeps at
        # most FINISH_AREA pixels (sub-pixel there is ~0.01 of its pixel; at
        # full resolution a 700x500 template's fits cost seconds).
        largest = max(img.shape[0] * img.shape[1] * self.scale_range[1] ** 2 for img in images)
        self._finish_level = min(self.levels, max(0, math.ceil(math.log(max(largest / FINISH_AREA, 1.0), 4))))
        self._templates = [PoseTemplate(img, w, self.levels) for img, w in zip(images, weights)]
        self._circle = self.angle_range[1] - self.angle_range[0] >= 360.0
        self._disc = [screens_with_disc(img.shape[0], img.shape[1]) for img in images]
        self._variants: Kept[tuple[np.ndarray, np.ndarray]] = Kept(
            VARIANTS_KEPT, max_bytes=VARIANT_BYTES_KEPT, size=lambda v: v[0].nbytes + v[1].nbytes)
        self._lock = threading.Lock()
        # The top level's grid of poses, matched as one bank (by (level, stride): large frames are
        # screened every other pixel, by a bank made when first needed).
        top = self._make_top(self.levels)
        self._tops = {(top.level, top.stride): top}

    def _make_top(self, level: int, stride: int | None = None) -> _TopGrid:
        """The grid of poses searched on ``level`` as the top, matched as one bank (every ``stride``-th pixel)."""
        grid: list[tuple[int, float, float]] = []
        tables: list[np.ndarray] = []  # per template: its grid indices by (angle, scale)
        images_top, masks_top = [], []
        for index, template_ in enumerate(self._templates):
            angles_, scales_ = self._angles(level, template_), self._scales(level, template_)
            tables.append(len(grid) + np.arange(len(angles_) * len(scales_)).reshape(len(angles_), len(scales_)))
            for angle in angles_:
                for scale in scales_:
                    image, mask_ = self._variant(index, level, angle, scale, disc=self._disc[index], paired=True)
                    grid.append((index, float(angle), float(scale)))
                    images_top.append(image)
                    masks_top.append(mask_.astype(np.uint8))
        # A large grid (several templates, scales) is screened every other
        # top-level pixel: a quarter of the work; the level below then looks
        # two pixels either side.
        stride = stride or (2 if len(grid) > LARGE_GRID else 1)
        bank = Matcher(images_top, masks=masks_top, method=self.method, stride=stride)
        # The grid by template and canvas: (template, (h, w), indices into the grid).
        shapes: dict[tuple, list[int]] = {}
        for i, ((index, _, _), (h, w)) in enumerate(zip(grid, bank.shapes)):
            shapes.setdefault((index, (h, w)), []).append(i)
        return _TopGrid(level=level, grid=grid, tables=tables, bank=bank, stride=stride,
                        # How far the level is mirrored out where parts may be clipped: the largest canvas's half.
                        pad=max(max(h, w) // 2 for h, w in bank.shapes),
                        shape_groups=[(index, shape, np.array(members)) for (index, shape), members in shapes.items()])

    def _top_for(self, frame_shape: tuple[int, int]) -> _TopGrid:
        """The top grid a frame of ``frame_shape`` is screened with.

        The grid as made, or for a large frame (its top level's pixels times
        the grid's poses over ``TOP_WORK``) the same grid screened every other
        pixel, as a large grid is: a 20 px part in 12 MP took 5.8 s at every
        pixel. (Screening a level higher, where such a part keeps 10 px, was
        tried and lost parts: on smooth backgrounds everything scores 0.98
        against a 10 px template.)
        """
        top = self._tops[(self.levels, 1)] if (self.levels, 1) in self._tops else self._tops[(self.levels, 2)]
        pixels = (frame_shape[0] >> self.levels) * (frame_shape[1] >> self.levels)
        if top.stride == 2 or pixels * len(top.grid) <= TOP_WORK:
            return top
        with self._lock:
            made = self._tops.get((self.levels, 2))
        if made is None:
            # Made outside the lock (it takes a while: retained_bytes must not wait on it); two
            # threads may both make it, and the first kept wins.
            made = self._make_top(self.levels, stride=2)
            with self._lock:
                made = self._tops.setdefault((self.levels, 2), made)
        return made

    def __len__(self) -> int:
        return len(self._templates)

    def retained_bytes(self) -> int:
        """What this search keeps between calls: its variants and its top-level banks' plans."""
        with self._lock:
            tops = list(self._tops.values())
        return self._variants.nbytes() + sum(top.bank.retained_bytes() for top in tops)

    def memory_estimate(self, frame_shape: tuple[int, int]) -> int:
        """Bytes a search of a frame of ``frame_shape`` (H, W) holds at most, from the shapes alone.

        The frame's pyramid (float32, a third more than the frame), and the
        top level's bank over that level (its maps for every pose, its work
        arrays and the kernel spectra its plan keeps), mirrored out for
        clipped parts: the bulk of a search.
        """
        height, width = frame_shape
        pyramid_bytes = height * width * self.channels * 4 * 4 // 3
        top = self._top_for(frame_shape)
        shape = (max(1, height >> top.level) + 2 * top.pad, max(1, width >> top.level) + 2 * top.pad)
        if any(h > shape[0] or w > shape[1] for h, w in top.bank.shapes):
            return pyramid_bytes + sum(4 * shape[0] * shape[1] for _ in top.bank.shapes)
        working, retained = top.bank.memory_estimate(shape)
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

    def _variant(self, index: int, level: int, angle: float, scale: float, disc: bool = False,
                 paired: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return self._variants.get((index, level, round(angle, 6), round(scale, 8), disc, paired),
                                  lambda: self._templates[index].variant(level, angle, scale, disc, paired=paired))

    def _clamp(self, angle: float, scale: float) -> tuple[float, float]:
        if not self._circle:
            angle = min(max(angle, self.angle_range[0]), self.angle_range[1])
        return _wrap(angle) if self._circle else angle, min(max(scale, self.scale_range[0]), self.scale_range[1])

    # -- search ---------------------------------------------------------------

    def _frame(self, frame: np.ndarray, min_visible: float, cancelled: Callable[[], bool]) -> _Frame:
        image = options.as_image(frame, "frame")
        if image.shape[2] != self.channels:
            raise options.OptionError(f"frame has {image.shape[2]} channel(s) but the templates have {self.channels}")
        if not np.isfinite(image).all():
            raise options.OptionError("frame contains NaN or inf")
        top = self._top_for(image.shape[:2])
        return _Frame(pyramid(image, top.level), min_visible, cancelled, top)

    def _window(self, frame: _Frame, index: int, level: int, cx: float, cy: float, angle: float,
                scale: float, reach: int, shift: tuple[float, float] | None = None) -> tuple[np.ndarray, int, int] | None:
        """Scores of one pose's variant at the positions within ``reach`` of (cx, cy), rounded; with the first position.

        With ``shift``, the variant is made afresh with its centre that far off the canvas's (not kept).
        A position where the variant reaches past the frame's edge is scored on
        its visible part when at least ``frame.min_visible`` of it is inside
        (-inf where less is); with ``min_visible`` 1 only whole positions are kept.
        """
        if shift is None:
            image, weights = self._variant(index, level, angle, scale)
        else:
            image, weights = self._templates[index].variant(level, angle, scale, shift=shift)
        level_image = frame.levels[level]
        h, w = weights.shape
        x0 = int(round(cx)) - reach - w // 2
        y0 = int(round(cy)) - reach - h // 2
        height, width = level_image.shape[:2]
        side = 2 * reach + 1
        if x0 >= 0 and y0 >= 0 and x0 + side - 1 + w <= width and y0 + side - 1 + h <= height:
            out = np.empty((side, side))
            window_scores(level_image, y0, x0, image, weights, _METHOD[self.method], out)
            return out, x0 + w // 2, y0 + h // 2
        if frame.min_visible >= 1.0:
            # Only the window's positions where the whole variant lies in the frame.
            left, top = max(x0, 0), max(y0, 0)
            right, bottom = min(x0 + side - 1 + w, width), min(y0 + side - 1 + h, height)
            if right - left < w or bottom - top < h:
                return None
            out = np.empty((bottom - top - h + 1, right - left - w + 1))
            window_scores(level_image, top, left, image, weights, _METHOD[self.method], out)
            return out, left + w // 2, top + h // 2
        out = np.empty((side, side))
        clipped_scores(level_image, image, weights, _METHOD[self.method], y0, x0, frame.min_visible, out)
        if not np.isfinite(out).any():
            return None
        return out, x0 + w // 2, y0 + h // 2

    def _peak_window(self, frame: _Frame, index: int, level: int, cx: float, cy: float, angle: float,
                     scale: float) -> tuple[np.ndarray, int, int, int, int] | None:
        """The 3x3 scores around the best pixel near (cx, cy), moving there while it is not central (3 times
        at most): (scores, first x, first y, best row, best column)."""
        for _ in range(3):
            window = self._window(frame, index, level, cx, cy, angle, scale, 1)
            if window is None:
                return None
            scores, x0, y0 = window
            y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
            if scores.shape != (3, 3) or (y, x) == (1, 1):
                break
            cx, cy = x0 + x, y0 + y
        return scores, x0, y0, int(y), int(x)

    def _refine(self, frame: _Frame, cand: _Candidate, level: int, reach: int,
                angle_step: float, scale_step: float, spread: tuple[int, int] = (1, 1)) -> _Candidate | None:
        """The best pose at ``level`` within ``reach`` pixels and ``spread`` (angle, scale) steps of ``cand``.

        Where the best lies on the edge of that neighbourhood, in angle, scale
        or position (the coarser level was further off than its step), the
        search moves there and goes on, a few times at most: a hill climb on
        the grid of this level.
        """
        best = None
        seen: set[tuple[float, float, float, float]] = set()
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
                    key = (round(angle_c, 9), round(scale_c, 12), round(centre.cx), round(centre.cy))
                    if key in seen:
                        continue
                    seen.add(key)
                    window = self._window(frame, cand.template, level, centre.cx, centre.cy, angle_c,
                                          scale_c, reach)
                    if window is None:
                        continue
                    value, bx, by = _best_of(window)
                    if best is None or value > best.score:
                        best = _Candidate(cand.template, bx, by, angle_c, scale_c, value)
                        scores, x0, y0 = window
                        edge = (i in (0, len(angles) - 1) and len(angles) > 1) or \
                            (j in (0, len(scales) - 1) and len(scales) > 1) or \
                            (reach > 0 and (by - y0 in (0, scores.shape[0] - 1) or bx - x0 in (0, scores.shape[1] - 1)))
            if not edge:
                break
        return best

    def _finish(self, frame: _Frame, cand: _Candidate) -> Pose | None:
        """Sub-step angle and scale (parabolas), then the sub-pixel position (quadric) at level 0."""
        template = self._templates[cand.template]
        level = self._finish_level
        unit = 2.0 ** level  # frame pixels per pixel of this level
        angle_step = self._angle_step(level, template) / 2.0
        scale_step = self._scale_step(level, template) / 2.0

        def score_at(angle: float, scale: float) -> float:
            angle, scale = self._clamp(angle, scale)
            window = self._window(frame, cand.template, level, cand.cx, cand.cy, angle, scale, 1)
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
        peak = self._peak_window(frame, cand.template, level, cand.cx, cand.cy, angle, scale)
        if peak is None:
            return None
        scores, x0, y0, y, x = peak
        cx, cy = x0 + x, y0 + y
        if scores.shape != (3, 3) or (y, x) != (1, 1) or not np.isfinite(scores).all():  # at the edge: no fit
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
                window = self._window(frame, cand.template, level, cx, cy, angle_, scale_, 0, shift)
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

    def _step_down(self, frame: _Frame, cand: _Candidate, below: int) -> _Candidate | None:
        """A candidate of level ``below + 1`` refined on level ``below`` (whole pixels, that level's steps).

        Where the score falls by more than ``WIDEN_DROP`` on the way down, the
        coarser level's angle may have been a neighbour's pattern (or the
        part's own half-turned twin): the angle window widens to
        ``2 * TOP_SPREAD + 2`` steps either side and the better answer stays.
        """
        template = self._templates[cand.template]
        start = _Candidate(cand.template, cand.cx * 2.0, cand.cy * 2.0, cand.angle, cand.scale, cand.score)
        # The coarser level's peak is within half its pixel: one pixel here
        # (two below a top level screened every other pixel).
        first = below == frame.top.level - 1
        reach = frame.top.stride if first else 1
        spread = (TOP_SPREAD, TOP_SCALE_SPREAD) if first else (1, 1)
        angle_step, scale_step = self._angle_step(below, template), self._scale_step(below, template)
        refined = self._refine(frame, start, below, reach, angle_step, scale_step, spread)
        if refined is None or refined.score < cand.score - WIDEN_DROP:
            # Wider in angle only, at the scale found: the angle is what a neighbour's pattern misleads.
            if refined is not None:
                start = _Candidate(start.template, start.cx, start.cy, start.angle, refined.scale, start.score)
            wider = self._refine(frame, start, below, reach + 1, angle_step, scale_step, (2 * TOP_SPREAD + 2, 0))
            if wider is not None and (refined is None or wider.score > refined.score):
                refined = wider
        return refined

    def _descend(self, frame: _Frame, found: list[_Candidate], level: int, top_k: int) -> list[_Candidate]:
        """Carry candidates found at ``level`` down to the finishing level, level by level.

        Before the first level and after each, candidates scoring
        ``PRUNE_MARGIN`` under the ``top_k``-th best go (no level below raised
        a score by that much on any scene measured), and after each,
        candidates that reached the same pose are one.
        """
        found = _prune(found, top_k)
        for below in range(level - 1, self._finish_level - 1, -1):
            stepped = []
            for cand in found:
                _check(frame.cancelled)
                refined = self._step_down(frame, cand, below)
                if refined is not None:
                    stepped.append(refined)
            found = _prune(self._distinct(stepped, below), top_k)
        return found

    def _distinct(self, found: list[_Candidate], level: int) -> list[_Candidate]:
        """The best of candidates that reached the same pose (within a pixel and a step) on ``level``."""
        def same(a: _Candidate, b: _Candidate) -> bool:
            step = 1.5 * self._angle_step(level, self._templates[a.template])
            return (a.template == b.template and abs(a.cx - b.cx) <= 1.5 and abs(a.cy - b.cy) <= 1.5
                    and _angle_gap(a.angle, b.angle) <= step and abs(math.log(a.scale / b.scale)) <= 0.02)

        return _best_apart(found, same)

    def _conclude(self, frame: _Frame, found: list[_Candidate], top_k: int, min_score: float,
                  max_overlap: float) -> list[Pose]:
        """Finish the best candidates to sub-pixel, sub-step poses on level 0, and select among them.

        Only those that can still make the cut are finished (the finish moves a
        score by little: it samples between the grid's steps); twice ``top_k``
        and one, so that a wrong angle at the right place, ahead before the
        finish, cannot push the right one out. They are finished best first;
        where the finishing level is level 0 (its scores are the final ones),
        the rest are left once ``top_k`` are kept and the next could not pass
        the last of them by finishing (``_FINISH_GAIN``): on a tray of 24
        parts, clutter took a third of the finishing.
        """
        rough = sorted(((self._rough(c), c) for c in found), key=lambda pair: -pair[0].score)
        chosen = {id(p) for p in self._select([p for p, _ in rough], 2 * top_k + 1, min_score - _FINISH_GAIN,
                                                max_overlap)}
        finished: list[Pose] = []
        for pose, cand in rough:
            if id(pose) not in chosen:
                continue
            if self._finish_level == 0 and len(finished) >= top_k:
                kth = sorted((p.score for p in finished), reverse=True)[top_k - 1]
                if pose.score + _FINISH_GAIN < kth:  # (the plain bound first: a selection costs overlaps)
                    kept = self._select(self._distinct_poses(finished), top_k, min_score, max_overlap)
                    if len(kept) == top_k and pose.score + _FINISH_GAIN < kept[-1].score:
                        break
            _check(frame.cancelled)
            done = self._finish(frame, cand)
            if done is not None:
                done = self._decide_twin(frame, cand, done)
            if done is not None and done.visible >= frame.min_visible:
                finished.append(done)
        return self._select(self._distinct_poses(finished), top_k, min_score, max_overlap)

    @staticmethod
    def _distinct_poses(poses: list[Pose]) -> list[Pose]:
        """The best of one template's finished poses that are one (within a pixel and a degree): two
        hypotheses at one place can finish on the same pose, and ``max_overlap`` 1 must not return it twice."""
        return _best_apart(poses, lambda a, b: math.hypot(a.cx - b.cx, a.cy - b.cy) <= 1.0
                           and _angle_gap(a.angle, b.angle) <= 1.0 and abs(math.log(a.scale / b.scale)) <= 0.02)

    def _complete(self, frame: _Frame, index: int, pose: Pose) -> Pose | None:
        """A pose finished on its finishing level, made final: polished on level 0, its visible share."""
        if self._finish_level > 0:
            pose = self._polish(frame, index, pose)
            if pose is None:
                return None
        height, width = frame.levels[0].shape[:2]
        return replace(pose, visible=_visible_share(pose, width, height))

    def _decide_twin(self, frame: _Frame, cand: _Candidate, pose: Pose) -> Pose | None:
        """The pose or its 180-degree twin, whichever scores better on level 0, with how close the other came.

        The twin is looked for on the finishing level first (a pixel and a step
        around the half-turned pose); only where it comes within ``TWIN_MARGIN``
        of the pose is it finished too and the two compared on level 0.
        """
        final = self._complete(frame, cand.template, pose)
        if final is None or not self._circle:
            return final
        template = self._templates[cand.template]
        level = self._finish_level
        unit = 2.0 ** level
        # The half turn about the pose's centre, within a pixel: one window (a twin that close to the
        # pose comes within a step of its own best there; the full finish below measures it exactly).
        turned = _wrap(pose.angle + 180.0)
        window = self._window(frame, cand.template, level, pose.cx / unit, pose.cy / unit, turned, pose.scale, 1)
        if window is None or final.score <= 0.0:
            return final
        value, bx, by = _best_of(window)
        twin = _Candidate(cand.template, bx, by, turned, pose.scale, value)
        if twin.score < TWIN_MARGIN * pose.score:
            return replace(final, ambiguity=float(min(max(twin.score / final.score, 0.0), 1.0)))
        twin = self._refine(frame, twin, level, 1, self._angle_step(level, template),
                            self._scale_step(level, template)) or twin
        other = self._finish(frame, twin)
        other = None if other is None else self._complete(frame, cand.template, other)
        if other is None:
            return replace(final, ambiguity=float(min(max(twin.score / final.score, 0.0), 1.0)))
        if other.score > final.score:
            final, other = other, final
        return replace(final, ambiguity=float(min(max(other.score / final.score, 0.0), 1.0)) if final.score > 0 else 0.0)

    def _polish(self, frame: _Frame, index: int, pose: Pose) -> Pose | None:
        """A pose finished on a coarser level, placed and scored on level 0.

        The position by a quadric fit over the 3x3 scores around it on level 0
        (moving there first if the best is not central), the score level 0's.
        The angle and scale keep the finishing level's parabolic fits: there a
        template over 256x256 pixels still has 128 a side, and its angle came
        within 0.03 degrees; fitting them again on level 0 tripled the cost of
        a 762x521 part for nothing measurable.
        """
        peak = self._peak_window(frame, index, 0, pose.cx, pose.cy, pose.angle, pose.scale)
        if peak is None:
            return None
        scores, x0, y0, y, x = peak
        if scores.shape == (3, 3) and np.isfinite(scores).all() and (y, x) == (1, 1):
            dx, dy, value = quadric_peak(scores)
            cx, cy = x0 + 1 + dx, y0 + 1 + dy
        else:  # clipped, or still climbing: the best whole pixel
            cx, cy, value = x0 + x, y0 + y, float(scores[y, x])
        return replace(pose, cx=float(cx), cy=float(cy), score=float(value))

    def _rough(self, cand: _Candidate) -> Pose:
        template = self._templates[cand.template]
        unit = 2.0 ** self._finish_level
        return Pose(cx=float(cand.cx) * unit, cy=float(cand.cy) * unit, angle=float(cand.angle), scale=float(cand.scale),
                    score=float(cand.score), width=template.width * float(cand.scale),
                    height=template.height * float(cand.scale))

    def _top_candidates(self, frame: _Frame, top_k: int, places: int | None) -> list[list[_Candidate]]:
        """Each template's hypotheses on the top level: its best places, and at each several angles.

        The places are the best-scoring positions apart from each other (how
        many: :func:`place_budget`, or ``places``). At each, every angle whose
        score (its best scale, its best position within a pixel) is a local
        maximum over angle within ``HYPOTHESIS_MARGIN`` of the place's best is
        a hypothesis, ``HYPOTHESES`` at most: a part whose turned neighbour
        pattern, or its own half-turned twin, scores nearly as well keeps both,
        and the levels below decide between them.

        Where parts may be clipped (``min_visible`` < 1) the top level is
        mirrored out by the largest canvas's half, so that a place whose centre
        lies anywhere in the frame is screened.
        """
        grid = frame.top
        top = frame.levels[grid.level]
        height, width = top.shape[:2]
        if not any(h <= height and w <= width for h, w in grid.bank.shapes):
            smallest = min(grid.bank.shapes, key=lambda shape: shape[0] * shape[1])
            raise options.OptionError(
                f"no pose fits the frame: at its smallest scale a template's rotated canvas is {smallest[1]}x"
                f"{smallest[0]} at the search's top level, where the frame is {width}x{height}; send larger "
                "frames or smaller scales")
        # Mirrored out by the largest canvas's half: a place whose centre lies anywhere in the frame.
        pad = grid.pad if frame.min_visible < 1.0 else 0
        if pad:
            top = cv2.copyMakeBorder(top, pad, pad, pad, pad, cv2.BORDER_REFLECT_101).reshape(
                height + 2 * pad, width + 2 * pad, -1)
            height, width = top.shape[:2]
        best = np.full((len(self._templates), height, width), -np.inf, np.float32)
        which = np.full(best.shape, -1, np.int64)
        fits = [h <= height and w <= width for h, w in grid.bank.shapes]
        maps = grid.bank(top, cancelled=frame.cancelled) if all(fits) else None
        step = grid.stride
        stacks = []  # (template, members, similarity stack, first row, first column)
        for index, (h, w), members in grid.shape_groups:
            _check(frame.cancelled)
            if h > height or w > width:
                continue  # this template at this scale is larger than the frame
            if maps is None:  # a frame too small for some variants: match those that fit
                variants = [self._variant(index, grid.level, grid.grid[i][1], grid.grid[i][2], disc=self._disc[index],
                                          paired=True) for i in members]
                stack = np.stack(Matcher([image for image, _ in variants],
                                         masks=[weights.astype(np.uint8) for _, weights in variants],
                                         method=self.method, stride=step)(top))
            else:
                stack = np.stack([maps[i] for i in members])
                for i in members:
                    maps[i] = None  # the stack holds them now: the maps go as they are gathered
            if self.method == "sqdiff_normed":
                stack = 1.0 - stack
            # Variants of one canvas (a disc's: every angle of a scale) are one stack: the best per position.
            rows = slice(h // 2, h // 2 + step * stack.shape[1], step)
            cols = slice(w // 2, w // 2 + step * stack.shape[2], step)
            keep_best(stack, members, best[index, rows, cols], which[index, rows, cols])
            stacks.append((index, members, stack, h // 2, w // 2))
        del maps
        out = []
        for index, template in enumerate(self._templates):
            # Places a quarter of the template's shorter side apart: touching parts' centres lie
            # closer than half of it (two of five interlocked parts were one place at a half).
            radius = max(1, int(PLACE_SPACING * min(template.height, template.width) * self.scale_range[0]
                                / 2.0 ** grid.level))
            mine = [entry for entry in stacks if entry[0] == index]
            scores = best[index]
            if not pad:
                out.append([h for x, y in _places(scores, radius, top_k, places)
                            for h in self._hypotheses(grid, index, mine, x, y, 0)])
                continue
            # The band within ``pad`` of the frame's edge scored its windows on mirrored pixels: a
            # clipped part there scores low (0.86 where clutter inside scored 0.96) and a pixel or
            # three off. Its places are taken apart from the inside's, and each hypothesis is scored
            # again on its visible part, within RESCORE_REACH pixels.
            reach = 2 * pad  # the band: windows there reach past the frame's edge
            band = np.zeros(scores.shape, bool)
            band[:reach, :] = band[-reach:, :] = band[:, :reach] = band[:, -reach:] = True
            inside = np.where(band, -np.inf, scores).astype(np.float32)
            found = [h for x, y in _places(inside, radius, top_k, places)
                     for h in self._hypotheses(grid, index, mine, x, y, pad)]
            # Band places that could matter: mirrored pixels cost a clipped part up to about 0.1
            # (0.86 for a bar whose visible part scored 0.98), so those far under the inside's best
            # are left (on textured photographs every band place was, and rescoring them all doubled
            # a search's time).
            floor = max((h.score for h in found), default=-np.inf) - BAND_MARGIN
            edge = np.where(band, scores, -np.inf).astype(np.float32)
            for x, y in _places(edge, radius, top_k, places if places is not None else top_k + 1):
                hypotheses = self._hypotheses(grid, index, mine, x, y, pad)
                if not hypotheses or max(h.score for h in hypotheses) < floor:
                    continue
                scale = max(hypotheses, key=lambda h: h.score).scale
                found += self._rescore_clipped(frame, grid, index, x - pad, y - pad, scale)
            out.append(found)
        return out

    def _rescore_clipped(self, frame: _Frame, grid: _TopGrid, index: int, x: int, y: int,
                         scale: float) -> list[_Candidate]:
        """A top-level place near the frame's edge scored on its visible part at ``scale``: each of the
        grid's angles (its best position within ``RESCORE_REACH``); the local maxima over angle within
        ``HYPOTHESIS_MARGIN`` of the best (:meth:`_angle_peaks`). The mirrored scores gave
        the place and its scale, not its angle (90-180 degrees off for a clipped bar)."""
        table = grid.tables[index]
        best = np.full(table.shape[0], -np.inf)
        where: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] * table.shape[0]
        for i in range(table.shape[0]):
            window = self._window(frame, index, grid.level, x, y, grid.grid[int(table[i, 0])][1], scale, RESCORE_REACH)
            if window is not None:
                best[i], bx, by = _best_of(window)
                where[i] = (bx, by, scale)
        return [_Candidate(index, where[i][0], where[i][1], grid.grid[int(table[i, 0])][1], where[i][2], float(best[i]))
                for i in self._angle_peaks(best)]

    def _hypotheses(self, grid: _TopGrid, index: int, stacks: list, x: int, y: int, pad: int) -> list[_Candidate]:
        """The angle hypotheses of template ``index`` at top-level place (x, y) of the padded level."""
        values = np.full(len(grid.grid), -np.inf)
        for _, members, stack, row0, col0 in stacks:
            r = int(round((y - row0) / grid.stride))
            c = int(round((x - col0) / grid.stride))
            r0, r1 = max(r - 1, 0), min(r + 2, stack.shape[1])
            c0, c1 = max(c - 1, 0), min(c + 2, stack.shape[2])
            if r0 < r1 and c0 < c1:
                values[members] = stack[:, r0:r1, c0:c1].max(axis=(1, 2))
        table = grid.tables[index]  # (angles, scales) grid indices
        profile = values[table]
        per_angle = profile.max(axis=1)
        out = []
        for i in self._angle_peaks(per_angle):
            _, angle, scale = grid.grid[int(table[i, int(np.argmax(profile[i]))])]
            out.append(_Candidate(index, float(x - pad), float(y - pad), angle, scale, float(per_angle[i])))
        return out

    def _angle_peaks(self, per_angle: np.ndarray) -> list[int]:
        """The angles (indices, best first) that are local maxima of ``per_angle`` (round the circle when
        the search covers it) within ``HYPOTHESIS_MARGIN`` of the best, ``HYPOTHESES`` at most."""
        best = float(per_angle.max())
        if not np.isfinite(best):
            return []
        n = len(per_angle)
        peaks = []
        for i in range(n):
            if self._circle:
                before, after = per_angle[(i - 1) % n], per_angle[(i + 1) % n]
            else:
                before = per_angle[i - 1] if i > 0 else -np.inf
                after = per_angle[i + 1] if i + 1 < n else -np.inf
            if per_angle[i] >= before and per_angle[i] >= after and per_angle[i] >= best - HYPOTHESIS_MARGIN:
                peaks.append(i)
        return sorted(peaks, key=lambda i: -per_angle[i])[:HYPOTHESES]

    def _select(self, poses: list[Pose], top_k: int, min_score: float, max_overlap: float) -> list[Pose]:
        """The best poses over ``min_score`` whose boxes overlap no better one by more than ``max_overlap`` (IoU)."""
        return boxes.suppress([p for p in poses if p.score >= min_score], lambda p: p.score,
                              lambda a, b: boxes.iou(_box(a), _box(b)) > max_overlap, limit=top_k)

    def search(self, frame: np.ndarray, top_k: int = 1, min_score: float = 0.5, max_overlap: float = 0.5,
               min_visible: float = MIN_VISIBLE, candidates: int | None = None,
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
            (intersection over union of the two polygons) are dropped.
        min_visible : float
            A part reaching past the frame's edge is scored on its visible part
            and returned when at least this share of its box is inside, in
            (0, 1]; 1 returns whole parts only. Parts whose centre lies
            outside the frame are not looked for.
        candidates : int, optional
            How many places per template the top level carries down (each with
            its angle hypotheses); by default :func:`place_budget`'s rule.
        cancelled : callable, optional
            Asked between the top level's groups of poses, between levels and
            between candidates; when it returns True the search stops with
            :class:`Cancelled` (a caller gone, a deadline passed, a server
            shutting down).

        Returns
        -------
        list of Pose, or one such list per template when templates were given as a list.
        """
        top_k, min_score, max_overlap, min_visible, candidates = check_search(
            top_k, min_score, max_overlap, min_visible, candidates)
        image = self._frame(frame, min_visible, cancelled or _never)
        results = self._global(image, top_k, min_score, max_overlap, candidates)
        return results if self._many else results[0]

    def track(self, frame: np.ndarray, previous, top_k: int = 1, min_score: float = 0.5,
              max_overlap: float = 0.5, min_visible: float = MIN_VISIBLE, candidates: int | None = None,
              reach: int = 16, cancelled: Callable[[], bool] | None = None):
        """Find the templates near their previous poses first; search globally where that fails.

        Parameters
        ----------
        frame : numpy.ndarray
            The next frame.
        previous : list of Pose, or one list per template
            The poses of the last frame (as :meth:`search` or :meth:`track` returned them).
        top_k, min_score, max_overlap, min_visible, candidates :
            As for :meth:`search`.
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
        top_k, min_score, max_overlap, min_visible, candidates = check_search(
            top_k, min_score, max_overlap, min_visible, candidates)
        if not isinstance(reach, int | np.integer) or isinstance(reach, bool) or reach < 1:
            raise options.OptionError(f"reach must be a positive whole number of pixels, got {reach!r}")
        lists = list(previous) if self._many else [previous]
        if len(lists) != len(self._templates) or not all(isinstance(p, list | tuple) for p in lists):
            raise options.OptionError(f"previous must hold one list of poses per template ({len(self._templates)})")
        image = self._frame(frame, min_visible, cancelled or _never)
        level = min(self._finish_level + 1, self.levels)
        results: list[list[Pose] | None] = []
        for index, poses in enumerate(lists):
            template = self._templates[index]
            found = []
            for pose in poses:
                if not isinstance(pose, Pose):
                    raise options.OptionError("previous must hold Pose objects")
                _check(image.cancelled)
                start = _Candidate(index, pose.cx / 2.0 ** level, pose.cy / 2.0 ** level, pose.angle,
                                   min(max(pose.scale, self.scale_range[0]), self.scale_range[1]), pose.score)
                near = self._refine(image, start, level, max(1, math.ceil(reach / 2.0 ** level)),
                                    self._angle_step(level, template), self._scale_step(level, template))
                refined = None if near is None else self._descend(image, [near], level, 1)
                if not refined or refined[0].score < max(min_score, pose.score - TRACK_DROP):
                    found = []  # lost: the global search decides
                    break
                found.append(refined[0])
            kept = self._conclude(image, found, top_k, min_score, max_overlap)
            results.append(kept if kept else None)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            fresh = self._global(image, top_k, min_score, max_overlap, candidates)
            for i in missing:
                results[i] = fresh[i]
        out = [r if r is not None else [] for r in results]
        return out if self._many else out[0]

    def _global(self, frame: _Frame, top_k: int, min_score: float, max_overlap: float,
                places: int | None) -> list[list[Pose]]:
        results = []
        for hypotheses in self._top_candidates(frame, top_k, places):
            found = self._descend(frame, hypotheses, frame.top.level, top_k)
            results.append(self._conclude(frame, found, top_k, min_score, max_overlap))
        return results


def place_budget(top_k: int) -> tuple[int, int]:
    """How many top-level places a search carries down per template: (always, at most).

    Always ``2 top_k + 2`` (each part's place, and as many look-alikes);
    beyond those, a crowded scene adds places while they score within
    ``PLACE_MARGIN`` of the ``top_k``-th best, up to ``4 top_k + 8``: a tray
    of 18 parts and clutter keeps its right candidates to the fine levels.
    """
    return 2 * top_k + 2, 4 * top_k + 8


def _places(scores: np.ndarray, radius: int, top_k: int, places: int | None) -> list[tuple[int, int]]:
    """The best places of a top-level map (consumed: each taken place's neighbourhood is cleared), as (x, y).

    The map's maxima are found through the maxima of its blocks of
    ``_PLACE_BLOCK`` pixels, each block's kept up to date as places are
    cleared: on a 12 MP frame a full pass per place took a twentieth of the
    search.
    """
    always, most = (places, places) if places is not None else place_budget(top_k)
    height, width = scores.shape
    side = _PLACE_BLOCK
    cols = -(-width // side)
    blocks = block_maxima(scores, side)
    found: list[tuple[int, int, float]] = []
    while len(found) < most:
        block = int(np.argmax(blocks))
        value = float(blocks.flat[block])
        if not np.isfinite(value):
            break
        by, bx = divmod(block, cols)
        cell = scores[by * side:(by + 1) * side, bx * side:(bx + 1) * side]
        y, x = divmod(int(np.argmax(cell)), cell.shape[1])
        y, x = y + by * side, x + bx * side
        if len(found) >= always and value < found[min(top_k, len(found)) - 1][2] - PLACE_MARGIN:
            break
        found.append((x, y, value))
        y0, y1, x0, x1 = max(0, y - radius), min(height, y + radius + 1), max(0, x - radius), min(width, x + radius + 1)
        scores[y0:y1, x0:x1] = -np.inf
        for r in range(y0 // side, (y1 - 1) // side + 1):
            for c in range(x0 // side, (x1 - 1) // side + 1):
                blocks[r, c] = scores[r * side:(r + 1) * side, c * side:(c + 1) * side].max()
    return [(x, y) for x, y, _ in found]


def _prune(found: list[_Candidate], top_k: int) -> list[_Candidate]:
    """The candidates within ``PRUNE_MARGIN`` of the ``top_k``-th best (on one level, scores compare)."""
    if len(found) <= top_k:
        return found
    floor = sorted((c.score for c in found), reverse=True)[top_k - 1] - PRUNE_MARGIN
    return [c for c in found if c.score >= floor]


def _best_apart(items: list, same: Callable[[Any, Any], bool]) -> list:
    """``items`` (each with a ``score``) best first, each dropped where it is ``same`` as one kept."""
    return boxes.suppress(items, lambda item: item.score, same)


def _best_of(window: tuple[np.ndarray, int, int]) -> tuple[float, int, int]:
    """The best score of a window (as :meth:`PoseSearch._window` returns it) and its position (x, y)."""
    scores, x0, y0 = window
    y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[y, x]), x0 + int(x), y0 + int(y)


def _angle_gap(a: float, b: float) -> float:
    """Degrees between two angles, the short way round."""
    return abs(_wrap(a - b))


def _visible_share(pose: Pose, width: int, height: int) -> float:
    """The share of the pose's rotated box inside a frame of ``width`` x ``height`` pixels."""
    area = pose.width * pose.height
    if area <= 0.0:
        return 0.0
    box = cv2.boxPoints(((pose.cx, pose.cy), (pose.width, pose.height), -pose.angle))
    if (box >= -0.5).all() and (box[:, 0] <= width - 0.5).all() and (box[:, 1] <= height - 0.5).all():
        return 1.0  # whole: exactly (OpenCV's float32 intersection put a whole part at 0.9999998)
    edges = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]], np.float32)
    inside, _ = cv2.intersectConvexConvex(box.astype(np.float32), edges)
    return float(min(max(inside / area, 0.0), 1.0))


def check_search(top_k: object, min_score: object, max_overlap: object = 0.5, min_visible: object = MIN_VISIBLE,
                  candidates: object = None) -> tuple[int, float, float, float, int | None]:
    """The search options, checked (OptionError with the reason)."""
    if not isinstance(top_k, int | np.integer) or isinstance(top_k, bool) or top_k < 1:
        raise options.OptionError(f"top_k must be a positive whole number, got {top_k!r}")
    for name, value in (("min_score", min_score), ("max_overlap", max_overlap), ("min_visible", min_visible)):
        if not isinstance(value, int | float | np.floating) or isinstance(value, bool) or not math.isfinite(value):
            raise options.OptionError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= float(max_overlap) <= 1.0:
        raise options.OptionError(f"max_overlap must be between 0 and 1, got {max_overlap}")
    if not 0.0 < float(min_visible) <= 1.0:
        raise options.OptionError(f"min_visible must be in (0, 1] (the share of a part inside the frame), "
                                  f"got {min_visible}")
    if candidates is not None and (not isinstance(candidates, int | np.integer) or isinstance(candidates, bool)
                                   or not 1 <= candidates <= MAX_CANDIDATES):
        raise options.OptionError(f"candidates must be a whole number from 1 to {MAX_CANDIDATES}, got {candidates!r}")
    return (int(top_k), float(min_score), float(max_overlap), float(min_visible),
            None if candidates is None else int(candidates))


def _box(pose: Pose) -> boxes.Box:
    """A pose's rotated box."""
    return float(pose.cx), float(pose.cy), float(pose.width), float(pose.height), float(pose.angle)
