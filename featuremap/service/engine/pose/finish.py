"""The finish: each pose refined to sub-pixel, sub-step on its finishing level, placed and scored on
level 0, and its half-turned twin decided.

:class:`Finishing` holds :class:`~.search.PoseSearch`'s methods for it (a mixin)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .parts import Pose, _Candidate, _check, _Frame, _visible_share
from .template import _wrap
from .scores import parabola, quadric_peak


#: A half-turned twin scoring at least this share of the pose (on the finishing level) is finished and compared.
TWIN_MARGIN = 0.8

# The step (pixels) of the final sub-pixel position fit.
_NUDGE = 0.25

# Rounds of the final angle, scale and position fits, at most.
_FINISH_ROUNDS = 4

# How much finishing may raise a grid pose's score: candidates this far under min_score are finished too.
_FINISH_GAIN = 0.05

# (Finishing._decide_twin: the twin's window is to be scored.)
_ASK = object()


class Finishing:
    """PoseSearch's finish."""

    def _finished(self, frame: _Frame, cand: _Candidate) -> Pose | None:
        """A candidate finished on level 0 (:meth:`_finish`), and its half-turned twin decided."""
        _check(frame.cancelled)
        done = self._finish(frame, cand)
        return None if done is None else self._decide_twin(frame, cand, done)

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

    def _finish(self, frame: _Frame, cand: _Candidate) -> Pose | None:
        """Sub-step angle and scale (parabolas), then the sub-pixel position at level 0 (:meth:`_finish_all`)."""
        return self._finish_all(frame, [cand])[0]

    def _finish_all(self, frame: _Frame, cands: list[_Candidate]) -> list[Pose | None]:
        """Each candidate finished (:meth:`_start` then :meth:`_rounds`), side by side: each step's variants of
        every candidate still fitting are drawn and scored in one kernel call per template, on every core (one
        call per candidate and step, a tray's 24 parts were 200 calls of three variants each)."""
        out: list[Pose | None] = [None] * len(cands)
        level = self._finish_level
        # Every candidate's first three windows (its angle and a half step either side) in one call.
        first = []
        for cand in cands:
            step = self._angle_step(level, self._templates[cand.template]) / 2.0
            first += [(cand.template, cand.cx, cand.cy, *self._clamp(cand.angle + side * step, cand.scale))
                      for side in (0, -1, 1)]
        firsts = [-np.inf if window is None else window[0] for window in self._windows(frame, level, first, 1)]
        pending = []  # (candidate, its rounds, the poses they ask for)
        for k, cand in enumerate(cands):
            _check(frame.cancelled)
            start = self._start(frame, cand, firsts[3 * k:3 * k + 3])
            if not isinstance(start, tuple):
                out[k] = start
                continue
            rounds = self._rounds(frame, cand, *start)
            pending.append((k, rounds, next(rounds)))
        while pending:
            _check(frame.cancelled)
            scores: list = [None] * len(pending)
            for index in {cands[k].template for k, _, _ in pending}:
                mine = [n for n, (k, _, _) in enumerate(pending) if cands[k].template == index]
                values = iter(self._shifted(frame, index, self._finish_level,
                                            [pose for n in mine for pose in pending[n][2]]))
                for n in mine:
                    scores[n] = [next(values) for _ in pending[n][2]]
            going = []
            for (k, rounds, _), values in zip(pending, scores):
                try:
                    going.append((k, rounds, rounds.send(values)))
                except StopIteration as done:
                    out[k] = done.value
            pending = going
        return out

    def _start(self, frame: _Frame, cand: _Candidate, first: list[float]):
        """The finish's first part: angle and scale by parabolas through the best scores within a pixel (``first``:
        those at the candidate's angle and a half step either side), the peak's pixel and a quadric over its 3x3
        scores. The pose where that is all (at the edge: no fit), None where none fits, else what
        :meth:`_rounds` starts from: (angle, scale, cx, cy, dx, dy, value)."""
        template = self._templates[cand.template]
        level = self._finish_level
        unit = 2.0 ** level  # frame pixels per pixel of this level
        angle_step = self._angle_step(level, template) / 2.0
        scale_step = self._scale_step(level, template) / 2.0

        def score_at(angle: float, scale: float) -> float:
            return scores_at((angle, scale))[0]

        def scores_at(*poses: tuple[float, float]) -> list[float]:
            """The best score within a pixel of the candidate at each (angle, scale), in one kernel call."""
            windows = self._windows(frame, level, [(cand.template, cand.cx, cand.cy, *self._clamp(a, s))
                                                   for a, s in poses], 1)
            return [-np.inf if window is None else window[0] for window in windows]

        angle, scale = cand.angle, cand.scale
        centre, left, right = first
        if not np.isfinite(centre):
            return None
        if max(left, right) > centre:  # the best sample is a neighbour: move there first
            angle += angle_step if right > left else -angle_step
            centre, left, right = (right, centre, score_at(angle + angle_step, scale)) if right > left else \
                (left, score_at(angle - angle_step, scale), centre)
        if all(np.isfinite((left, centre, right))):
            angle += parabola(left, centre, right) * angle_step
        if self.scale_range[1] > self.scale_range[0]:
            down, up, middle = scores_at((angle, scale / (1.0 + scale_step)), (angle, scale * (1.0 + scale_step)),
                                         (angle, scale))
            if all(np.isfinite((down, middle, up))):
                scale *= (1.0 + scale_step) ** parabola(down, middle, up)
        angle, scale = self._clamp(angle, scale)
        # The peak's pixel: the 3x3 scores around it (moving there if it is not central).
        peak = self._peak_window(frame, cand.template, level, cand.cx, cand.cy, angle, scale)
        if peak is None:
            return None
        scores, x0, y0, y, x = peak
        if scores.shape != (3, 3) or (y, x) != (1, 1) or not np.isfinite(scores).all():  # at the edge: no fit
            return Pose(cx=float(x0 + x) * unit, cy=float(y0 + y) * unit, angle=_wrap(angle) if self._circle else angle,
                        scale=scale, score=float(scores[y, x]), width=template.width * scale,
                        height=template.height * scale)
        dx, dy, value = quadric_peak(scores)
        return angle, scale, x0 + x, y0 + y, dx, dy, value

    def _rounds(self, frame: _Frame, cand: _Candidate, angle: float, scale: float, cx: int, cy: int, dx: float,
                dy: float, value: float):
        """The finish's fits, angle, scale and position again, the template drawn at the sub-pixel estimate:
        sampled as the frame was, its scores are symmetric about the true pose and the fits lose their bias.
        A generator: it yields the poses (angle, scale, dx, dy, cx, cy) it needs scored, is sent their scores
        (:meth:`_finish_all` drives many at once), and returns the pose."""
        template = self._templates[cand.template]
        level = self._finish_level
        fine_angle = self._angle_step(level, template) / 4.0
        fine_scale = self._scale_step(level, template) / 4.0
        seen: dict[tuple[float, float, float, float], float] = {}

        def centre_scores(*poses: tuple[float, float, float, float]):
            """Scores at the peak's pixel of (angle, scale, dx, dy) each: those not seen yet asked for at once."""
            keys = [(*self._clamp(angle_, scale_), dx_, dy_) for angle_, scale_, dx_, dy_ in poses]
            todo = [key for key in dict.fromkeys(keys) if key not in seen]
            if todo:
                seen.update(zip(todo, (yield [(*key, cx, cy) for key in todo])))
            return [seen[key] for key in keys]

        for _ in range(_FINISH_ROUNDS):
            before = (angle, scale, dx, dy)
            middle, left, right = yield from centre_scores(
                (angle, scale, dx, dy), (angle - fine_angle, scale, dx, dy), (angle + fine_angle, scale, dx, dy))
            if all(np.isfinite((left, middle, right))):
                angle += parabola(left, middle, right) * fine_angle
            if self.scale_range[1] > self.scale_range[0]:
                down, up, middle = yield from centre_scores((angle, scale / (1.0 + fine_scale), dx, dy),
                                                            (angle, scale * (1.0 + fine_scale), dx, dy),
                                                            (angle, scale, dx, dy))
                if all(np.isfinite((down, middle, up))):
                    scale *= (1.0 + fine_scale) ** parabola(down, middle, up)
            angle, scale = self._clamp(angle, scale)
            # The position as the template's own sub-pixel shift: the scores
            # then cover the same pixels on both sides (a 3x3 fit's do not,
            # and a masked window's edges made it lean by up to 0.1 px).
            middle, left, right = yield from centre_scores((angle, scale, dx, dy), (angle, scale, dx - _NUDGE, dy),
                                                           (angle, scale, dx + _NUDGE, dy))
            if all(np.isfinite((left, middle, right))):
                dx += parabola(left, middle, right) * _NUDGE
            up, down, middle = yield from centre_scores(
                (angle, scale, dx, dy - _NUDGE), (angle, scale, dx, dy + _NUDGE), (angle, scale, dx, dy))
            if all(np.isfinite((up, middle, down))):
                dy += parabola(up, middle, down) * _NUDGE
            value = max(value, middle)
            if abs(dx) > 1.0 or abs(dy) > 1.0:
                break
            moved = (abs(angle - before[0]) / fine_angle, abs(scale / before[1] - 1.0) / max(fine_scale, 1e-12),
                     abs(dx - before[2]) / _NUDGE, abs(dy - before[3]) / _NUDGE)
            if max(moved) < 0.05:  # settled: under a twentieth of a step everywhere
                break
        unit = 2.0 ** level
        return Pose(cx=float(cx + dx) * unit, cy=float(cy + dy) * unit,
                    angle=float(_wrap(angle) if self._circle else angle),
                    scale=float(scale), score=float(value), width=template.width * float(scale),
                    height=template.height * float(scale))

    def _complete(self, frame: _Frame, index: int, pose: Pose) -> Pose | None:
        """A pose finished on its finishing level, made final: polished on level 0, its visible share."""
        if self._finish_level > 0:
            pose = self._polish(frame, index, pose)
            if pose is None:
                return None
        height, width = frame.levels[0].shape[:2]
        return replace(pose, visible=_visible_share(pose, width, height))

    def _twin_rough(self, frame: _Frame, cand: _Candidate) -> float:
        """The score of a candidate (on the finishing level) turned by a half turn, within a pixel: what it could
        finish as, by :meth:`_decide_twin` (-inf where no window fits)."""
        window = self._window(frame, cand.template, self._finish_level, cand.cx, cand.cy, _wrap(cand.angle + 180.0),
                              cand.scale, 1)
        return -np.inf if window is None else float(window[0].max())

    def _twin_window(self, template: int, pose: Pose) -> tuple[int, float, float, float, float]:
        """The window (as :meth:`_windows` takes it) where a finished pose's half-turned twin is looked for: the half
        turn about the pose's centre, within a pixel (a twin that close to the pose comes within a step of its
        own best there; :meth:`_decide_twin` measures it exactly)."""
        unit = 2.0 ** self._finish_level
        return template, pose.cx / unit, pose.cy / unit, _wrap(pose.angle + 180.0), pose.scale

    def _decide_twin(self, frame: _Frame, cand: _Candidate, pose: Pose, near=_ASK) -> Pose | None:
        """The pose or its 180-degree twin, whichever scores better on level 0, with how close the other came.

        The twin is looked for on the finishing level first (:meth:`_twin_window`; ``near``, its best where
        already scored); only where it comes within ``TWIN_MARGIN`` of the pose is it finished too and the two
        compared on level 0.
        """
        final = self._complete(frame, cand.template, pose)
        if final is None or not self._circle:
            return final
        template = self._templates[cand.template]
        level = self._finish_level
        if near is _ASK:
            (near,) = self._windows(frame, level, [self._twin_window(cand.template, pose)], 1)
        if near is None or final.score <= 0.0:
            return final
        value, bx, by, _ = near
        twin = _Candidate(cand.template, bx, by, _wrap(pose.angle + 180.0), pose.scale, value)
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
