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

import numpy as np

from featuremap import boxes

from .. import options
from ..kept import Kept
from .descent import Descent
from .finish import _FINISH_GAIN, Finishing
from .grid import MIN_POSE_SIDE, Grid, _levels, check_ranges, screens_with_disc
from .parts import Pose, _angle_gap, _best_apart, _box, _Candidate, _check, _Frame, _never
from .template import PoseTemplate, pyramid
from .top import TopLevel
from .windows import Windows

#: Methods pose search takes (similarities after the sqdiff_normed flip).
POSE_METHODS = ("ccoeff_normed", "ccorr_normed", "sqdiff_normed")
#: Poses are finished (sub-pixel, sub-step) where the template keeps at most this many pixels.
FINISH_AREA = 256 * 256
#: A tracked pose that loses more than this much score is taken for lost (see PoseSearch.track).
TRACK_DROP = 0.15
#: Rotated, scaled variants kept per PoseSearch (the coarse levels' are made once).
VARIANTS_KEPT = 4096
#: Bytes of variants one search keeps at most (tracking makes new ones at every fitted pose).
VARIANT_BYTES_KEPT = 32 << 20
#: The share of a part's box that must lie inside the frame for it to be returned (by default).
MIN_VISIBLE = 0.75
#: The most top-level places a caller may ask a search to carry down per template.
MAX_CANDIDATES = 256


class PoseSearch(Grid, Windows, TopLevel, Descent, Finishing):
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
        # The top level's variants at each of its scales, packed for the edge band's rescoring (one per scale).
        self._packs: dict = {}
        # The top level's grid of poses, matched as one bank (by (level, stride): large frames are
        # screened every other pixel, by a bank made when first needed).
        top = self._make_top(self.levels)
        self._tops = {(top.level, top.stride): top}

    def __len__(self) -> int:
        return len(self._templates)

    def retained_bytes(self) -> int:
        """What this search keeps between calls: its variants and its top-level banks' plans."""
        with self._lock:
            tops = list(self._tops.values())
            packs = list(self._packs.values())
        return (self._variants.nbytes() + sum(top.bank.retained_bytes() for top in tops)
                + sum(p.images.nbytes + p.weights.nbytes for p in packs))

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

    # -- search ---------------------------------------------------------------

    def _frame(self, frame: np.ndarray, min_visible: float, cancelled: Callable[[], bool]) -> _Frame:
        image = options.as_image(frame, "frame")
        if image.shape[2] != self.channels:
            raise options.OptionError(f"frame has {image.shape[2]} channel(s) but the templates have {self.channels}")
        if not np.isfinite(image).all():
            raise options.OptionError("frame contains NaN or inf")
        top = self._top_for(image.shape[:2])
        return _Frame(pyramid(image, top.level), min_visible, cancelled, top)

    def _conclude(self, frame: _Frame, found: list[_Candidate], top_k: int, min_score: float,
                  max_overlap: float) -> list[Pose]:
        """Finish the best candidates to sub-pixel, sub-step poses on level 0, and select among them.

        Only those that can still make the cut are finished (the finish moves a
        score by little: it samples between the grid's steps); twice ``top_k``
        and one, so that a wrong angle at the right place, ahead before the
        finish, cannot push the right one out. They are finished best first;
        where the finishing level is level 0 (its scores are the final ones),
        the rest are left once ``top_k`` are kept and the next could not pass
        the last of them by finishing (``_FINISH_GAIN``, a bound measured, not
        proven). Over the full circle a candidate may finish as its
        half-turned twin, far above its rough score (:meth:`_decide_twin`):
        there the bound is the better of its rough score and its twin's (one
        window at the half turn), and each candidate is judged on its own (a
        tray of 24 parts finished 32, the 8 look-alikes for nothing).
        """
        rough = sorted(((self._rough(c), c) for c in found), key=lambda pair: -pair[0].score)
        chosen = {id(p) for p in self._select([p for p, _ in rough], 2 * top_k + 1, min_score - _FINISH_GAIN,
                                                max_overlap)}
        rough = [(pose, cand) for pose, cand in rough if id(pose) in chosen]
        # The first top_k are finished whatever they come to: side by side (Finishing._finish_all).
        head = [cand for _, cand in rough[:top_k]]
        poses = self._finish_all(frame, head)
        # Their half-turned twins' windows in one call too.
        twins = iter(self._windows(frame, self._finish_level, [self._twin_window(cand.template, pose) for cand, pose
                                                               in zip(head, poses) if pose is not None], 1)
                     if self._circle else [])
        finished: list[Pose] = []
        for cand, done in zip(head, poses):
            if done is not None:
                done = self._decide_twin(frame, cand, done, next(twins) if self._circle else None)
            if done is not None and done.visible >= frame.min_visible:
                finished.append(done)
        floor = None  # the top_k-th kept pose's score, while ``finished`` is unchanged
        for pose, cand in rough[top_k:]:
            if self._finish_level == 0 and len(finished) >= top_k:
                bound = pose.score + _FINISH_GAIN
                kth = sorted((p.score for p in finished), reverse=True)[top_k - 1]
                if bound < kth and self._circle:  # it may finish as its twin: the twin's rough score bounds that
                    bound = max(pose.score, self._twin_rough(frame, cand)) + _FINISH_GAIN
                if bound < kth:  # (the plain bound first: a selection costs overlaps)
                    if floor is None:
                        kept = self._select(self._distinct_poses(finished), top_k, min_score, max_overlap)
                        floor = kept[-1].score if len(kept) == top_k else -np.inf
                    if bound < floor:
                        if not self._circle:
                            break  # (best first: the rest score lower still)
                        continue  # (a later one's twin may score higher)
            done = self._finished(frame, cand)
            if done is not None and done.visible >= frame.min_visible:
                finished.append(done)
                floor = None
        return self._select(self._distinct_poses(finished), top_k, min_score, max_overlap)

    @staticmethod
    def _distinct_poses(poses: list[Pose]) -> list[Pose]:
        """The best of one template's finished poses that are one (within a pixel and a degree): two
        hypotheses at one place can finish on the same pose, and ``max_overlap`` 1 must not return it twice."""
        return _best_apart(poses, lambda a, b: math.hypot(a.cx - b.cx, a.cy - b.cy) <= 1.0
                           and _angle_gap(a.angle, b.angle) <= 1.0 and abs(math.log(a.scale / b.scale)) <= 0.02)

    def _select(self, poses: list[Pose], top_k: int, min_score: float, max_overlap: float) -> list[Pose]:
        """The best poses over ``min_score`` whose boxes overlap no better one by more than ``max_overlap`` (IoU)."""
        def overlaps(a: Pose, b: Pose) -> bool:
            # Boxes whose centres lie further apart than their half diagonals together cannot meet (IoU 0):
            # a tray's 24 parts asked the polygon intersection a thousand times per frame, nearly all such.
            reach = 0.5 * (math.hypot(a.width, a.height) + math.hypot(b.width, b.height))
            if abs(a.cx - b.cx) >= reach or abs(a.cy - b.cy) >= reach:
                return False
            return boxes.iou(_box(a), _box(b)) > max_overlap

        return boxes.suppress([p for p in poses if p.score >= min_score], lambda p: p.score, overlaps, limit=top_k)

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


