"""The top level: the best places of the screened maps, and at each the angle hypotheses carried down.

:class:`TopLevel` holds :class:`~.search.PoseSearch`'s methods for it (a mixin)."""

from __future__ import annotations

import cv2
import numpy as np

from .. import options
from ..matcher import Matcher
from .grid import _TopGrid
from .parts import _Candidate, _check, _Frame
from .batch import Packed
from .topmaps import block_maxima, keep_best


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

# Block side of the top map's block maxima, through which places are found.
_PLACE_BLOCK = 32

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


def _gathered(maps: list[np.ndarray], members: np.ndarray) -> np.ndarray:
    """The maps ``members`` as one (n, H, W) stack: a view where they are consecutive planes of one array (the
    bank's maps are: copying a 12 MP frame's 41 maps cost a twentieth of its search), else a copy."""
    first = maps[members[0]]
    base = first.base
    if base is not None and isinstance(base, np.ndarray) and base.ndim == 3 and base.shape[1:] == first.shape \
            and base.flags.c_contiguous and first.flags.c_contiguous and base.dtype == first.dtype:
        plane = first.nbytes
        offset = first.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        start = offset // plane if plane else -1
        if plane and offset % plane == 0 and 0 <= start and start + len(members) <= base.shape[0] and all(
                maps[i].base is base and maps[i].__array_interface__["data"][0]
                == first.__array_interface__["data"][0] + k * plane for k, i in enumerate(members)):
            return base[start:start + len(members)]
    return np.stack([maps[i] for i in members])


class TopLevel:
    """PoseSearch's top level: places and hypotheses."""

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
        best, stacks = self._top_stacks(frame, grid, top)
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
            out.append(self._with_band(frame, grid, index, mine, scores, radius, top_k, places, pad))
        return out

    def _top_stacks(self, frame: _Frame, grid: _TopGrid, top: np.ndarray) -> tuple[np.ndarray, list]:
        """The top level's scores: per template the best over its variants at each position, and each
        group of one canvas's variants as a stack (template, members, stack, first row, first column)."""
        height, width = top.shape[:2]
        best = np.full((len(self._templates), height, width), -np.inf, np.float32)
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
                stack = _gathered(maps, members)
                for i in members:
                    maps[i] = None  # the stack holds them now: the maps go as they are gathered
            if self.method == "sqdiff_normed":
                stack = 1.0 - stack
            # Variants of one canvas (a disc's: every angle of a scale) are one stack: the best per position.
            rows = slice(h // 2, h // 2 + step * stack.shape[1], step)
            cols = slice(w // 2, w // 2 + step * stack.shape[2], step)
            if step == 1:
                keep_best(stack, best[index, rows, cols])
            else:  # into contiguous rows, then back: the strided rows' max ran scalar (a 12 MP frame: 2x)
                compact = best[index, rows, cols].copy()
                keep_best(stack, compact)
                best[index, rows, cols] = compact
            stacks.append((index, members, stack, h // 2, w // 2))
        return best, stacks

    def _with_band(self, frame: _Frame, grid: _TopGrid, index: int, stacks: list, scores: np.ndarray, radius: int,
                   top_k: int, places: int | None, pad: int) -> list[_Candidate]:
        """The hypotheses of a top level mirrored out by ``pad``: the inside's places, and the edge band's apart.

        The band within ``pad`` of the frame's edge scored its windows on mirrored pixels: a clipped part
        there scores low (0.86 where clutter inside scored 0.96) and a pixel or three off. Its places are
        taken apart from the inside's, and each hypothesis is scored again on its visible part, within
        ``RESCORE_REACH`` pixels. ``scores`` (this template's plane of the best scores) is consumed.
        """
        height, width = scores.shape
        # The band: windows there reach past the frame's edge. Its strips are copied out and
        # cleared in place (masks and copies of a 12 MP map cost a twentieth of the search).
        reach = 2 * pad
        edge = np.full(scores.shape, -np.inf, np.float32)
        strips = [(slice(0, reach), slice(None)), (slice(max(0, height - reach), height), slice(None)),
                  (slice(None), slice(0, reach)), (slice(None), slice(max(0, width - reach), width))]
        for strip in strips:
            edge[strip] = scores[strip]
        for strip in strips:
            scores[strip] = -np.inf
        found = [h for x, y in _places(scores, radius, top_k, places)
                 for h in self._hypotheses(grid, index, stacks, x, y, pad)]
        # Band places that could matter: mirrored pixels cost a clipped part up to about 0.1
        # (0.86 for a bar whose visible part scored 0.98), so those far under the inside's best
        # are left (on textured photographs every band place was, and rescoring them all doubled
        # a search's time). A floor from the top_k-th inside place instead leaves no more: what is
        # rescored goes down unless PRUNE_MARGIN under the top_k-th, so only places under it by that
        # and BAND_MARGIN could go, and a tray of 24 parts had none (band 0.81-0.91, the 24th 0.98).
        floor = max((h.score for h in found), default=-np.inf) - BAND_MARGIN
        band = []  # (x, y, scale) of the band's places to rescore
        for x, y in _places(edge, radius, top_k, places if places is not None else top_k + 1):
            hypotheses = self._hypotheses(grid, index, stacks, x, y, pad)
            if not hypotheses or max(h.score for h in hypotheses) < floor:
                continue
            band.append((x - pad, y - pad, max(hypotheses, key=lambda h: h.score).scale))
        return found + self._rescore_clipped(frame, grid, index, band)

    def _rescore_clipped(self, frame: _Frame, grid: _TopGrid, index: int,
                         band: list[tuple[int, int, float]]) -> list[_Candidate]:
        """Top-level places near the frame's edge, (x, y, scale) each, scored on their visible part at their
        scale: each of the grid's angles (its best position within ``RESCORE_REACH``); at each place the local
        maxima over angle within ``HYPOTHESIS_MARGIN`` of the best (:meth:`_angle_peaks`). The mirrored scores
        gave the place and its scale, not its angle (90-180 degrees off for a clipped bar). Every place's
        every angle at a scale is one kernel call, run on every core (a tray's 25 band places: 800 windows)."""
        if not band:
            return []
        table = grid.tables[index]
        angles = [grid.grid[int(table[i, 0])][1] for i in range(table.shape[0])]
        windows: list = [None] * len(band)  # per place, its windows at each angle
        for scale in {scale for _, _, scale in band}:
            at = [p for p, (_, _, s) in enumerate(band) if s == scale]
            scored = self._scored(frame, grid.level, self._packed(index, grid.level, angles, scale),
                                  list(range(len(angles))) * len(at),
                                  [band[p][:2] for p in at for _ in angles], RESCORE_REACH)
            for k, p in enumerate(at):
                windows[p] = scored[k * len(angles):(k + 1) * len(angles)]
        found = []
        for (_, _, scale), place in zip(band, windows):
            best = np.full(len(angles), -np.inf)
            where: list[tuple[float, float]] = [(0.0, 0.0)] * len(angles)
            for i, window in enumerate(place):
                if window is not None:
                    best[i], bx, by, _ = window
                    where[i] = (bx, by)
            found += [_Candidate(index, where[i][0], where[i][1], angles[i], scale, float(best[i]))
                      for i in self._angle_peaks(best)]
        return found

    def _packed(self, index: int, level: int, angles: list[float], scale: float) -> Packed:
        """The variants of template ``index`` at ``level``, ``angles`` and ``scale``, packed (kept by the search)."""
        key = (index, level, round(scale, 8), len(angles))
        packed = self._packs.get(key)
        if packed is None:
            packed = Packed([self._variant(index, level, angle, scale) for angle in angles])
            with self._lock:
                packed = self._packs.setdefault(key, packed)
        return packed

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
