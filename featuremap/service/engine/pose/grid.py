"""The pose grid: levels, angle and scale steps, the top level's bank of variants, what a search admits.

:class:`Grid` holds :class:`~.search.PoseSearch`'s methods on its grid (a mixin: they share the search's
state)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import options
from ..matcher import Matcher
from .template import PoseTemplate, _wrap, canvas_sides


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

#: A top-level grid of more poses than this is screened every other pixel.
LARGE_GRID = 256

#: A frame whose top level's pixels times the grid's poses exceed this is screened every other pixel
#: (VGA's top with 100 poses: 2M; 12 MP with a 20 px part's 32: 384M).
TOP_WORK = 32_000_000

#: The smallest template side that rotates meaningfully.
MIN_POSE_SIDE = 8

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
class _TopGrid:
    """The poses a search screens on its top level, as one bank of variants."""

    level: int
    grid: list[tuple[int, float, float]]  # (template, angle, scale) per variant of the bank
    tables: list[np.ndarray]  # per template: its grid indices by (angle, scale)
    bank: Matcher
    stride: int  # the bank's stride: 2 for a large grid
    pad: int  # how far the level is mirrored out where parts may be clipped
    shape_groups: list[tuple[int, tuple[int, int], np.ndarray]]  # (template, canvas, grid indices)


class Grid:
    """PoseSearch's grid: its top-level banks, steps, variants."""

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
        against a 10 px template. Every third pixel, though a sample then still
        lies within a pixel of every place, lost two of that part's three
        copies to clutter: a sample a pixel off diagonally, at an angle a step
        off, is where a 20 px part scores least.)
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
