"""Scores of poses' variants over small windows of a level: one window per call, or many in one.

:class:`Windows` holds :class:`~.search.PoseSearch`'s methods for them (a mixin)."""

from __future__ import annotations

import numpy as np

from .batch import Packed, batch_scores, shifted_scores
from .parts import _METHOD, _Frame
from .scores import clipped_scores, window_scores

Window = tuple[np.ndarray, int, int]  # scores, and the first position's centre (x, y)
Best = tuple[float, int, int, bool]  # a window's best score, its position (x, y), and whether on the window's rim


class Windows:
    """PoseSearch's windows."""

    def _window(self, frame: _Frame, index: int, level: int, cx: float, cy: float, angle: float,
                scale: float, reach: int) -> Window | None:
        """Scores of one pose's variant at the positions within ``reach`` of (cx, cy), rounded; with the first position.

        A position where the variant reaches past the frame's edge is scored on
        its visible part when at least ``frame.min_visible`` of it is inside
        (-inf where less is); with ``min_visible`` 1 only whole positions are kept.
        (A variant drawn at a sub-pixel shift: :meth:`_shifted`.)
        """
        image, weights = self._variant(index, level, angle, scale)
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

    def _windows(self, frame: _Frame, level: int, poses: list[tuple[int, float, float, float, float]],
                 reach: int) -> list[Best | None]:
        """The best of :meth:`_window` of each of ``poses`` (template, cx, cy, angle, scale), without a shift, in
        one kernel call (None where nothing counts).

        The same scores as one call per pose, but for ``min_visible`` 1: a
        window reaching past the frame's edge keeps its side, its positions
        whose canvas is not whole inside at -inf (instead of being cut to the
        others).
        """
        if not poses:
            return []
        variants, keys, which = [], {}, []
        for index, _, _, angle, scale in poses:
            key = (index, round(angle, 6), round(scale, 8))
            if key not in keys:
                keys[key] = len(variants)
                variants.append(self._variant(index, level, angle, scale))
            which.append(keys[key])
        return self._scored(frame, level, Packed(variants), which, [(cx, cy) for _, cx, cy, _, _ in poses], reach)

    def _scored(self, frame: _Frame, level: int, packed: Packed, which: list[int],
                centres: list[tuple[float, float]], reach: int) -> list[Best | None]:
        """Packed variants ``which`` scored within ``reach`` of ``centres`` (rounded), in one kernel call: each
        window's best (its first best position, as argmax takes it), None where nothing counts."""
        side = 2 * reach + 1
        variants = np.asarray(which, np.int64)
        firsts = np.rint(np.asarray(centres, np.float64)).astype(np.int64) - reach  # (x, y): round half to even
        shapes = packed.shapes[variants]
        items = np.stack([variants, firsts[:, 1] - shapes[:, 0] // 2, firsts[:, 0] - shapes[:, 1] // 2], axis=1)
        out = np.empty((len(which), side, side))
        batch_scores(frame.levels[level], packed, items, _METHOD[self.method], frame.min_visible, out)
        flat = out.reshape(len(which), -1)
        at = flat.argmax(axis=1)
        rows, cols = np.divmod(at, side)
        rim = (rows == 0) | (rows == side - 1) | (cols == 0) | (cols == side - 1)
        found = zip(np.isfinite(flat).any(axis=1).tolist(), flat[np.arange(len(which)), at].tolist(),
                    (firsts[:, 0] + cols).tolist(), (firsts[:, 1] + rows).tolist(), rim.tolist())
        return [(value, x, y, edge) if finite else None for finite, value, x, y, edge in found]

    def _shifted(self, frame: _Frame, index: int, level: int,
                 poses: list[tuple[float, float, float, float, int, int]]) -> list[float]:
        """The scores of template ``index`` at each of ``poses`` (angle, scale, dx, dy, cx, cy): its centre (dx, dy)
        off the canvas's, the canvas centred on pixel (cx, cy); :meth:`_window` with a shift and no reach, in
        one kernel call that draws each variant too (drawn one by one they cost the finish more than their
        scores)."""
        out = np.empty(len(poses))
        shifted_scores(frame.levels[level], self._templates[index], level, np.array(poses, np.float64).reshape(-1, 6),
                       _METHOD[self.method], frame.min_visible, out)
        return out.tolist()
