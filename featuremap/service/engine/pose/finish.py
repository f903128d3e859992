"""The finish: each pose refined to sub-pixel, sub-step on its finishing level, placed and scored on
level 0, and its half-turned twin decided.

:class:`Finishing` holds :class:`~.search.PoseSearch`'s methods for it (a mixin)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .parts import Pose, _best_of, _Candidate, _Frame, _visible_share, _wrap
from .scores import parabola, quadric_peak


#: A half-turned twin scoring at least this share of the pose (on the finishing level) is finished and compared.
TWIN_MARGIN = 0.8

# The step (pixels) of the final sub-pixel position fit.
_NUDGE = 0.25

# Rounds of the final angle, scale and position fits, at most.
_FINISH_ROUNDS = 4

# How much finishing may raise a grid pose's score: candidates this far under min_score are finished too.
_FINISH_GAIN = 0.05


class Finishing:
    """PoseSearch's finish."""

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
