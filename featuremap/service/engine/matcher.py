"""The Matcher: a bank of templates prepared once, matched against many frames."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import cv2
import numpy as np

from . import options
from .cuda.device import check_device
from .frame_work import Cancelled, FrameWork
from .group_scores import group_scores
from .groups import PreparedTemplates, prepare_templates
from .kept import Kept
from .peaks import Peak, check_peak_options, find_peaks, vertex_offset
from .plans import PLANS_KEPT, Plans
from .scaling import exponent, is_safe, joint_exponents, restore
from .scores import CCORR, CCORR_NORMED, SSIM
from .scratch import ScratchPool

__all__ = ["Cancelled", "Found", "Matcher", "match"]


class Found(NamedTuple):
    """One frame's peaks per template (and its maps, when asked for): :meth:`Matcher.find`."""

    peaks: list[list[Peak]]
    maps: list[np.ndarray] | None


def _peak(row: np.ndarray, subpixel: bool) -> Peak:
    """A Peak from one row of cuda_kernels.top_peaks: score, y, x, left, right, above, below."""
    score, y, x = float(row[0]), int(row[1]), int(row[2])
    if not subpixel:
        return Peak(x=x, y=y, score=score)
    return Peak(x=x + vertex_offset(row[3], row[0], row[4]), y=y + vertex_offset(row[5], row[0], row[6]),
                score=score)


class Matcher:
    """A template bank prepared for matching, callable on frames.

    Parameters
    ----------
    templates : sequence of numpy.ndarray
        Each HxW or HxWxC (C = 1, 3, 4), uint8, float32 or float64. Sizes may
        differ; channel counts must agree with each other and with the frames.
    method : str
        One of ``sqdiff``, ``sqdiff_normed``, ``ccorr``, ``ccorr_normed``,
        ``ccoeff``, ``ccoeff_normed`` (OpenCV's formulas).
    padding : str
        ``valid`` (maps of (H-h+1) x (W-w+1)), ``same`` (H x W, template
        centred at h//2, w//2) or ``full`` ((H+h-1) x (W+w-1)).
    border : str
        How ``same`` and ``full`` extend the frame: ``constant``
        (``border_value``), ``reflect`` (reflect-101) or ``replicate``.
    border_value : float
        The constant border's value, in the frame's units.
    stride : int
        Sample the map every ``stride`` pixels from the first position; the
        skipped positions are not computed on the direct path.
    masks : sequence of (numpy.ndarray or None), optional
        One per template: HxW, uint8/bool (binary) or float (weights), with
        OpenCV's masked semantics.
    algorithm : str
        ``auto`` picks direct or spectral per group of same-sized templates
        from a cost model; ``direct`` and ``spectral`` force one.
    data_range : float, optional
        ``ssim`` only: the dynamic range L of its constants C1 = (0.01 L)^2
        and C2 = (0.03 L)^2; by default 255 for uint8 frames, 1.0 for float.
    device : str
        ``cpu``, or ``cuda``: the same maps computed on an NVIDIA GPU by
        numba-cuda (``pip install 'featuremap[cuda]'``; refused at once when it
        or a GPU is missing). The GPU path is always direct (``algorithm``
        is ignored) and matches batches of frames at once (:meth:`find`).
        Frames or templates beyond 2**-40..2**40 in magnitude are matched on
        the CPU (the scaling that keeps them exact lives there).

    Notes
    -----
    A Matcher is safe to call from many threads at once; on the GPU each
    thread has its own CUDA stream and work arrays.
    """

    def __init__(
        self,
        templates: Sequence[np.ndarray],
        *,
        method: str = "ccoeff_normed",
        padding: str = "valid",
        border: str = "constant",
        border_value: float = 0.0,
        stride: int = 1,
        masks: Sequence[np.ndarray | None] | None = None,
        algorithm: str = "auto",
        data_range: float | None = None,
        device: str = "cpu",
    ) -> None:
        self.device: str = check_device(device)
        checked = options.check_options(method=method, padding=padding, border=border, border_value=border_value,
                                        stride=stride, algorithm=algorithm, data_range=data_range)
        self.method: str = checked["method"]
        self.padding: str = checked["padding"]
        self.border: str = checked["border"]
        self.border_value: float = checked["border_value"]
        self.stride: int = checked["stride"]
        self.algorithm: str = checked["algorithm"]
        self.data_range: float | None = checked["data_range"]
        images, weights = _checked_templates(templates, masks)
        if self.method == "ssim" and any(w is not None for w in weights):
            raise options.OptionError("ssim does not take masks: match masked templates with another method")
        self.channels: int = images[0].shape[2]
        self.shapes: list[tuple[int, int]] = [img.shape[:2] for img in images]
        # Kept for the rare frames or templates of extreme magnitude, matched
        # by a Matcher of the same templates scaled by a power of two.
        self._images, self._weights = images, weights
        self._template_magnitude = max(float(np.abs(img).max()) for img in images)
        self._mask_magnitude = max((float(w.max()) for w in weights if w is not None), default=0.0)
        self._scaled: Kept[Matcher] = Kept(PLANS_KEPT)
        self._rescales = True  # False for the scaled Matchers themselves: scaled once, never again
        self._code = options.METHOD_CODES[self.method]
        safe = is_safe(self._template_magnitude) and is_safe(self._mask_magnitude)
        if not safe:
            # Every call goes through _call_scaled; the Matcher's own kernels
            # (for its cost model and estimates) are made of scaled values, so
            # that none overflows.
            images = [np.ldexp(img, -exponent(self._template_magnitude)) for img in images]
            weights = [None if w is None else np.ldexp(w, -exponent(self._mask_magnitude)) for w in weights]
        #: The templates as the kernels take them (public: the CUDA matcher reads it too).
        self.prepared: PreparedTemplates = prepare_templates(images, weights, self._code, self.padding, self.stride,
                                                             channel_major=self.method == "ssim")
        self._plans = Plans(self.prepared, self.algorithm)
        # Work arrays kept from call to call (see Scratch), one set per call in flight.
        self._scratches = ScratchPool()
        self._gpu = None
        if self.device == "cuda" and safe:
            from .cuda.matcher import CudaMatcher  # numba-cuda loads only here

            self._gpu = CudaMatcher(self)

    def __len__(self) -> int:
        return len(self.shapes)

    # -- per frame size ---------------------------------------------------

    def output_shape(self, index: int, frame_shape: tuple[int, int]) -> tuple[int, int]:
        """Shape of template ``index``'s map for frames of ``frame_shape`` (H, W)."""
        return self.prepared.output_shape(index, frame_shape)

    def memory_estimate(self, frame_shape: tuple[int, int]) -> tuple[int, int]:
        """Bytes a call on a frame of ``frame_shape`` (H, W) needs: (working, retained); see
        :meth:`Plans.memory_estimate <featuremap.service.engine.plans.Plans.memory_estimate>`."""
        return self._plans.memory_estimate(tuple(frame_shape))

    def retained_bytes(self) -> int:
        """What this Matcher keeps between calls: its plans' kernel spectra and its work arrays."""
        return self._scratches.nbytes() + self._plans.retained_bytes()

    def estimates(self, frame_shape: tuple[int, int]) -> tuple[float, float, float]:
        """The cost model's unscaled estimates of one call on a frame of ``frame_shape``, every group on
        one path: (the direct path's, the spectral path's frame part, its templates' part)."""
        return self._plans.estimates(tuple(frame_shape))

    def algorithms(self, frame_shape: tuple[int, int]) -> dict[tuple[int, int], str]:
        """Which path each template size takes for frames of ``frame_shape``."""
        plan = self._plans.get(tuple(frame_shape))
        return {(g.height, g.width): c for g, (c, _) in zip(self.prepared.groups, plan)}

    # -- per frame ----------------------------------------------------------

    def check_frame(self, frame: np.ndarray) -> np.ndarray:
        """Check a frame as a call would (raises OptionError); returns it as HxWxC in its own dtype."""
        image = options.check_image(frame, "frame")
        height, width, channels = image.shape
        if channels != self.channels:
            raise options.OptionError(
                f"frame has {channels} channel(s) but the templates have {self.channels}: convert the "
                "frame (e.g. cv2.cvtColor) or the templates"
            )
        if self.padding == "valid":
            for i, (h, w) in enumerate(self.shapes):
                if h > height or w > width:
                    raise options.OptionError(
                        f"template {i} ({h}x{w}) is larger than the frame ({height}x{width}) under "
                        "padding='valid': use padding='same' or 'full', or a smaller template"
                    )
        return image

    def _on_gpu(self, image: np.ndarray) -> bool:
        """Whether ``image`` (checked) is matched on the GPU: a GPU Matcher, and a magnitude its kernels take."""
        if self._gpu is None:
            return False
        if self.padding != "valid" and self.border == "constant" and not is_safe(abs(self.border_value)):
            return False
        if image.dtype == np.uint8:
            return True
        return is_safe(max(-float(image.min()), float(image.max())))

    def _planes(self, image: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frame padded for this Matcher, as (C, H, W) float32 planes.

        ``image`` is ``frame`` as validated, HxWxC float32 or uint8. Returns
        the planes and what was taken off each (float64, exactly; zeros when
        nothing).
        """
        top, bottom, left, right = self.prepared.pad
        if top or bottom or left or right:
            padded = cv2.copyMakeBorder(
                image.astype(np.float32, copy=False),  # a border value need not be a uint8
                top,
                bottom,
                left,
                right,
                options.BORDERS[self.border],
                value=(self.border_value,) * 4,
            )
            image = padded.reshape(padded.shape[0], padded.shape[1], -1)
        planes = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)  # converts and transposes in one pass
        means = np.zeros((planes.shape[0], 1, 1), np.float32)
        if self._code not in (SSIM, CCORR, CCORR_NORMED):
            # The ccoeff pair is invariant to an offset; centring the frame
            # keeps float32 correlations accurate on bright, flat regions.
            # sqdiff takes the templates' offset (see __init__); the ccorr
            # pair adds back what the offset took (scores.add_means).
            # A gray float32 frame reaches here uncopied: centre a copy of
            # it, never the caller's array (which may also be read-only).
            if self.prepared.offset is not None:
                means = self.prepared.offset.astype(np.float32)[:, None, None]
            else:
                means = planes.mean(axis=(1, 2), dtype=np.float64, keepdims=True).astype(np.float32)
            if np.shares_memory(planes, frame):
                planes = planes - means
            else:
                planes -= means
        return planes, means.reshape(-1).astype(np.float64)

    def __call__(self, frame: np.ndarray, *, cancelled: Callable[[], bool] | None = None) -> list[np.ndarray]:
        """Match every template against ``frame``.

        Parameters
        ----------
        frame : numpy.ndarray
            HxW or HxWxC, uint8, float32 or float64 (converted), no NaN/inf.
        cancelled : callable, optional
            Asked before each group of same-sized templates; when it returns
            True the call stops with :class:`Cancelled` (a caller that has
            gone away should not keep the cores busy).

        Returns
        -------
        list of numpy.ndarray
            One float32 map per template, in the bank's order.
        """
        checked = self.check_frame(frame)
        if self._on_gpu(checked):
            if cancelled is not None and cancelled():
                raise Cancelled("the match was cancelled")
            return self._run_gpu([checked], top_k=0, limit=None, distances=None, maps=True).maps[0]
        if checked.dtype == np.uint8:
            # A known range: no passes over the frame; converted to float32
            # in the one pass that makes its planes.
            image, magnitude = checked, 255.0
        else:
            image = np.ascontiguousarray(checked, dtype=np.float32)
            magnitude = max(-float(image.min()), float(image.max()))  # no |image| temporary
        if self.padding != "valid" and self.border == "constant":
            magnitude = max(magnitude, abs(self.border_value))
        if self._rescales and not (is_safe(magnitude) and is_safe(self._template_magnitude)
                                   and is_safe(self._mask_magnitude)):
            return self._call_scaled(image.astype(np.float32, copy=False), magnitude, frame.dtype == np.uint8,
                                     cancelled)
        frame_shape = image.shape[:2]
        plan = self._plans.get(frame_shape)
        scratch = self._scratches.take()
        try:
            work = FrameWork(*self._planes(image, frame), self.stride,
                             any(kspectra is not None for _, kspectra in plan), scratch, cancelled)
            work.data_range = self.data_range or (255.0 if frame.dtype == np.uint8 else 1.0)
            results: list[np.ndarray | None] = [None] * len(self.shapes)
            for group, (_, kspectra) in zip(self.prepared.groups, plan):
                work.check_cancelled()
                out_shape = self.output_shape(group.members[0], frame_shape)
                maps = group_scores(self._code, group, kspectra, out_shape, work)
                for index, score_map in zip(group.members, maps):
                    results[index] = score_map
        finally:
            self._scratches.give(scratch)
        return results

    def find(self, frames: Sequence[np.ndarray], *, top_k: int = 1, threshold: float | None = None,
             min_distance: int | Sequence[int] | None = None, subpixel: bool = False, maps: bool = False,
             cancelled: Callable[[], bool] | None = None) -> list[Found]:
        """Peaks (and, when asked, maps) of every template in each frame of a batch.

        On the CPU, ``find_peaks`` of each map of ``matcher(frame)``. On the
        GPU the frames (one shape and dtype) are matched in one batch and the
        peaks are found on the device: only they come back unless ``maps``.

        Parameters
        ----------
        frames : sequence of numpy.ndarray
            Frames as :meth:`__call__` takes them; on the GPU all of one shape and dtype.
        top_k, threshold, subpixel
            As :func:`find_peaks`.
        min_distance : int or sequence of int, optional
            As :func:`find_peaks`, for every template or one per template.
        maps : bool
            Return the maps too.
        cancelled : callable, optional
            As :meth:`__call__`.

        Returns
        -------
        list of Found
            One per frame: ``peaks[t]`` the peaks of template t (map
            coordinates), ``maps`` the maps or None.
        """
        if isinstance(frames, np.ndarray) or not isinstance(frames, Sequence) or len(frames) == 0:
            raise options.OptionTypeError("frames must be a non-empty list of arrays")
        distances = list(min_distance) if isinstance(min_distance, Sequence) else [min_distance] * len(self.shapes)
        if len(distances) != len(self.shapes):
            raise options.OptionError(f"min_distance has {len(distances)} entries: give one per template "
                                      f"({len(self.shapes)}) or a single number")
        distances = [check_peak_options(top_k=top_k, threshold=threshold, min_distance=d) for d in distances]
        images = [self.check_frame(f) for f in frames] if self._gpu is not None else None
        if images is None or not all(self._on_gpu(img) for img in images):
            found = []
            for frame in frames:
                score_maps = self(frame, cancelled=cancelled)
                peaks = [find_peaks(m, method=self.method, top_k=top_k, threshold=threshold, min_distance=d,
                                    subpixel=subpixel) for m, d in zip(score_maps, distances)]
                found.append(Found(peaks, score_maps if maps else None))
            return found
        if len({(img.shape, img.dtype) for img in images}) > 1:
            raise options.OptionError("on the GPU a batch's frames must share one shape and dtype: "
                                      "call find() once per kind of frame")
        if cancelled is not None and cancelled():
            raise Cancelled("the match was cancelled")
        lower = self.method in options.LOWER_IS_BETTER
        limit = None if threshold is None else (-float(threshold) if lower else float(threshold))
        result = self._run_gpu(images, top_k=top_k, limit=limit, distances=np.array(distances, np.int64), maps=maps)
        found = []
        for n in range(len(images)):
            peaks = [[_peak(row, subpixel) for row in rows] for rows in result.peaks[n]]
            found.append(Found(peaks, result.maps[n] if maps else None))
        return found

    def _run_gpu(self, images: list[np.ndarray], *, top_k: int, limit: float | None, distances: np.ndarray | None,
                 maps: bool):
        lower = self.method in options.LOWER_IS_BETTER
        if distances is None:
            distances = np.ones(len(self.shapes), np.int64)
        data_range = self.data_range or (255.0 if images[0].dtype == np.uint8 else 1.0)
        return self._gpu.run(images, top_k=top_k, limit=limit, lower=lower, distances=distances, maps=maps,
                             data_range=data_range)

    def device_bytes(self, frame_shape: tuple[int, int], dtype=np.uint8, count: int = 1) -> int:
        """GPU memory a batch of ``count`` frames of ``frame_shape`` (H, W) needs; 0 for a CPU Matcher."""
        if self._gpu is None:
            return 0
        return self._gpu.device_bytes(tuple(frame_shape), self.channels, np.dtype(dtype).itemsize, count)

    def _call_scaled(self, image: np.ndarray, magnitude: float, uint8: bool,
                     cancelled: Callable[[], bool] | None) -> list[np.ndarray]:
        """Match a frame (or templates, or mask weights) of extreme magnitude exactly, by powers of two
        (see scaling.py): a Matcher of the scaled templates, kept per scale, and its maps scaled back."""
        frame_exp, template_exp = joint_exponents(self._code, magnitude, self._template_magnitude)
        mask_exp = exponent(self._mask_magnitude)
        data_range = self.data_range or (255.0 if uint8 else 1.0)
        key = (template_exp, mask_exp, frame_exp if self._code == SSIM or self.border_value else 0)

        def make() -> Matcher:
            scaled = Matcher(
                [np.ldexp(img, -template_exp) for img in self._images],
                masks=[None if w is None else np.ldexp(w, -mask_exp) for w in self._weights],
                method=self.method, padding=self.padding, border=self.border,
                border_value=float(np.ldexp(self.border_value, -frame_exp)), stride=self.stride,
                algorithm=self.algorithm,
                data_range=float(np.ldexp(data_range, -frame_exp)) if self._code == SSIM else None,
            )
            scaled._rescales = False
            return scaled

        matcher = self._scaled.get(key, make)
        maps = matcher(np.ldexp(image, -frame_exp), cancelled=cancelled)
        return restore(maps, self._code, [w is not None for w in self._weights], frame_exp, template_exp, mask_exp)


def _checked_templates(templates, masks) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The templates as HxWxC float arrays of one channel count, and each one's mask weights (or None)."""
    if isinstance(templates, np.ndarray) or not isinstance(templates, Sequence):
        raise options.OptionTypeError("templates must be a list of arrays (wrap a single template in a list)")
    if len(templates) == 0:
        raise options.OptionError("templates is empty: give at least one template")
    images = [options.as_image(t, f"template {i}") for i, t in enumerate(templates)]
    channels = {img.shape[2] for img in images}
    if len(channels) > 1:
        raise options.OptionError(
            f"templates have different channel counts {sorted(channels)}: convert them all to the "
            "frames' channel count"
        )
    if masks is None:
        masks = [None] * len(images)
    if isinstance(masks, np.ndarray) or len(masks) != len(images):
        raise options.OptionError(f"masks must be a list with one entry (array or None) per template ({len(images)})")
    weights = [
        None if m is None else options.as_mask(m, img.shape[:2], f"mask {i}")
        for i, (m, img) in enumerate(zip(masks, images))
    ]
    return images, weights


def match(frame: np.ndarray, templates: Sequence[np.ndarray], **settings) -> list[np.ndarray]:
    """Match ``templates`` against one ``frame``: ``Matcher(templates, **settings)(frame)``.

    See :class:`Matcher` for the settings. Prepare a Matcher once instead when
    matching many frames against the same bank.
    """
    return Matcher(templates, **settings)(frame)
