"""Down the levels: each candidate refined level by level, within a pixel and a step, hill-climbing.

:class:`Descent` holds :class:`~.search.PoseSearch`'s methods for it (a mixin)."""

from __future__ import annotations

import math
from dataclasses import replace

from .grid import TOP_SCALE_SPREAD, TOP_SPREAD
from .parts import _angle_gap, _best_apart, _Candidate, _check, _Frame

#: A score that falls by more than this from one level to the next widens the angle window there.
WIDEN_DROP = 0.1
#: Candidates this far under the top_k-th best at a level are not carried further down.
PRUNE_MARGIN = 0.15
# Moves of the hill climb of a refinement (see Descent._refine).
_CLIMBS = 4


class Descent:
    """PoseSearch's descent."""

    def _refine(self, frame: _Frame, cand: _Candidate, level: int, reach: int,
                angle_step: float, scale_step: float, spread: tuple[int, int] = (1, 1)) -> _Candidate | None:
        """The best pose at ``level`` within ``reach`` pixels and ``spread`` (angle, scale) steps of ``cand``.

        Where the best lies on the edge of that neighbourhood, in angle, scale
        or position (the coarser level was further off than its step), the
        search moves there and goes on, a few times at most: a hill climb on
        the grid of this level (:meth:`_climb`).
        """
        return self._climb(frame, [cand], level, reach, [(angle_step, scale_step)], spread)[0]

    def _climb(self, frame: _Frame, cands: list[_Candidate], level: int, reach: int,
               steps: list[tuple[float, float]], spread: tuple[int, int]) -> list[_Candidate | None]:
        """:meth:`_refine` of each of ``cands`` (with its (angle, scale) steps), side by side: each round's
        windows of every candidate still climbing are one kernel call (a tray's 63 candidates, one call per
        window: most of the descent's time went to calls, and to one core)."""
        best: list[_Candidate | None] = [None] * len(cands)
        seen: list[set[tuple[float, float, int, int]]] = [set() for _ in cands]
        climbing = list(range(len(cands)))
        for _ in range(_CLIMBS):
            _check(frame.cancelled)
            todo = []  # (candidate, angle index, scale index, angle, scale, centre): poses not tried yet
            for c in climbing:
                centre = best[c] or cands[c]
                angle_step, scale_step = steps[c]
                angles = [centre.angle + i * angle_step for i in range(-spread[0], spread[0] + 1)]
                scales = [centre.scale * (1.0 + scale_step) ** j for j in range(-spread[1], spread[1] + 1)] \
                    if self.scale_range[1] > self.scale_range[0] else [centre.scale]
                for i, angle in enumerate(angles):
                    for j, scale in enumerate(scales):
                        angle_c, scale_c = self._clamp(angle, scale)
                        key = (round(angle_c, 9), round(scale_c, 12), round(centre.cx), round(centre.cy))
                        if key not in seen[c]:
                            seen[c].add(key)
                            todo.append((c, i in (0, len(angles) - 1) and len(angles) > 1,
                                         j in (0, len(scales) - 1) and len(scales) > 1, angle_c, scale_c, centre))
            windows = self._windows(frame, level, [(cands[c].template, centre.cx, centre.cy, a, s)
                                                   for c, _, _, a, s, centre in todo], reach)
            edge = dict.fromkeys(climbing, False)
            for (c, angle_end, scale_end, angle_c, scale_c, _), window in zip(todo, windows):
                if window is None:
                    continue
                value, bx, by, rim = window
                if best[c] is None or value > best[c].score:
                    best[c] = _Candidate(cands[c].template, bx, by, angle_c, scale_c, value)
                    edge[c] = angle_end or scale_end or (reach > 0 and rim)
            climbing = [c for c in climbing if edge[c]]
            if not climbing:
                break
        return best

    def _step_down(self, frame: _Frame, cands: list[_Candidate], below: int) -> list[_Candidate | None]:
        """Candidates of level ``below + 1`` refined on level ``below`` (whole pixels, that level's steps).

        Where the score falls by more than ``WIDEN_DROP`` on the way down, the
        coarser level's angle may have been a neighbour's pattern (or the
        part's own half-turned twin): the angle window widens to
        ``2 * TOP_SPREAD + 2`` steps either side and the better answer stays.
        """
        starts = [_Candidate(c.template, c.cx * 2.0, c.cy * 2.0, c.angle, c.scale, c.score) for c in cands]
        # The coarser level's peak is within half its pixel: one pixel here
        # (two below a top level screened every other pixel).
        first = below == frame.top.level - 1
        reach = frame.top.stride if first else 1
        spread = (TOP_SPREAD, TOP_SCALE_SPREAD) if first else (1, 1)
        steps = [(self._angle_step(below, self._templates[c.template]),
                  self._scale_step(below, self._templates[c.template])) for c in cands]
        refined = self._climb(frame, starts, below, reach, steps, spread)
        # Wider in angle only, at the scale found: the angle is what a neighbour's pattern misleads.
        widen = [k for k, (cand, done) in enumerate(zip(cands, refined))
                 if done is None or done.score < cand.score - WIDEN_DROP]
        wider = self._climb(frame, [replace(starts[k], scale=refined[k].scale) if refined[k] is not None
                                    else starts[k] for k in widen],
                            below, reach + 1, [steps[k] for k in widen], (2 * TOP_SPREAD + 2, 0))
        for k, other in zip(widen, wider):
            if other is not None and (refined[k] is None or other.score > refined[k].score):
                refined[k] = other
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
            stepped = [c for c in self._step_down(frame, found, below) if c is not None]
            found = _prune(self._distinct(stepped, below), top_k)
        return found

    def _distinct(self, found: list[_Candidate], level: int) -> list[_Candidate]:
        """The best of candidates that reached the same pose (within a pixel and a step) on ``level``."""
        steps = [1.5 * self._angle_step(level, template) for template in self._templates]

        def same(a: _Candidate, b: _Candidate) -> bool:
            return (a.template == b.template and abs(a.cx - b.cx) <= 1.5 and abs(a.cy - b.cy) <= 1.5
                    and _angle_gap(a.angle, b.angle) <= steps[a.template] and abs(math.log(a.scale / b.scale)) <= 0.02)

        return _best_apart(found, same)


def _prune(found: list[_Candidate], top_k: int) -> list[_Candidate]:
    """The candidates within ``PRUNE_MARGIN`` of the ``top_k``-th best (on one level, scores compare)."""
    if len(found) <= top_k:
        return found
    floor = sorted((c.score for c in found), reverse=True)[top_k - 1] - PRUNE_MARGIN
    return [c for c in found if c.score >= floor]
