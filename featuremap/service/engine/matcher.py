"""The Matcher: a bank of templates prepared once, matched against many frames."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import cv2
import numpy as np

from . import options, spectral
from .cuda.device import check_device
from .direct import correlate_direct, match_direct, split_phases
from .integral import channel_integrals, integral_images, row_prefix
from .kept import Kept
from .masked import masked_scores
from .peaks import Peak, check_peak_options, find_peaks, vertex_offset
from .plan import (
    CostModel,
    Group,
    direct_seconds,
    make_group,
    spectral_parts,
    spectral_seconds,
    spectrum_dtype,
    template_kernels,
)
from .scores import (
    CCOEFF,
    CCOEFF_NORMED,
    CCORR,
    CCORR_NORMED,
    SQDIFF,
    SQDIFF_NORMED,
    SSIM,
    finish_ssim,
    flat_tolerance,
    map_scores,
    add_means,
    window_stats,
    window_sums_map,
)


#: Magnitudes (largest absolute value) the kernels take as they are: squares
#: and sums of a window stay well inside float32's range. Outside, frame and
#: templates are scaled by powers of two first (Matcher._call_scaled).
SAFE_MAGNITUDES = (2.0 ** -40, 2.0 ** 40)


def _safe(magnitude: float) -> bool:
    return magnitude == 0.0 or SAFE_MAGNITUDES[0] <= magnitude <= SAFE_MAGNITUDES[1]


def _exponent(magnitude: float) -> int:
    """e such that magnitude / 2**e lies in [0.5, 1) (0 for 0)."""
    return int(np.frexp(magnitude)[1]) if magnitude > 0.0 else 0


_NO_OFFSETS = np.zeros(0)
_NO_SUMS = np.zeros((0, 1, 1))
_NO_MEANS = np.zeros(0)


#: Sets of work arrays a Matcher keeps (one per call in flight, up to this many).
SCRATCHES_KEPT = 2
#: Work arrays one set keeps (by name and shape; the oldest go first), and
#: the bytes it may hold: a 720p frame's arrays fit; a 4096x4096 frame's
#: integral images alone are 268 MB, and are made afresh each time, not kept.
SCRATCH_ARRAYS = 24
SCRATCH_BYTES = 64 << 20


class Scratch:
    """A call's work arrays (integral images, window statistics), kept for the next call.

    Fresh arrays of a frame's size cost page faults on every frame (glibc
    returns large blocks to the system when they are freed): on the 2-core
    VM 720p integral images took 30 ms instead of 7 and the whole call 1.8x
    as long. A Matcher lends each call a set that an earlier call returned,
    so a plain ``import`` of the engine is as fast as the server (which also
    calls runtime.retain_freed_memory()). One call uses a set at a time.
    """

    def __init__(self) -> None:
        self._arrays: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def get(self, name: str, shape: tuple[int, ...], dtype=np.float64, zero: bool = False) -> np.ndarray:
        """The array ``name`` of ``shape`` and ``dtype`` (its contents are the last call's unless ``zero``)."""
        key = (name, tuple(shape), np.dtype(dtype).str)
        found = self._arrays.get(key)
        if found is None:
            found = np.empty(shape, dtype)
            if self.nbytes() + found.nbytes <= SCRATCH_BYTES:
                self._arrays[key] = found
                if len(self._arrays) > SCRATCH_ARRAYS:
                    self._arrays.popitem(last=False)
        else:
            self._arrays.move_to_end(key)
        if zero:
            found.fill(0)
        return found

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())


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


class Cancelled(Exception):
    """A match stopped because its caller's ``cancelled()`` said so."""


#: Frame shapes whose plans (and kernel spectra) a Matcher keeps.
PLANS_KEPT = 4


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
        self.channels = channels.pop()
        if masks is None:
            masks = [None] * len(images)
        if isinstance(masks, np.ndarray) or len(masks) != len(images):
            raise options.OptionError(f"masks must be a list with one entry (array or None) per template ({len(images)})")
        weights = [
            None if m is None else options.as_mask(m, img.shape[:2], f"mask {i}")
            for i, (m, img) in enumerate(zip(masks, images))
        ]
        if self.method == "ssim" and any(w is not None for w in weights):
            raise options.OptionError("ssim does not take masks: match masked templates with another method")
        # Kept for the rare frames or templates of extreme magnitude, matched
        # by a Matcher of the same templates scaled by a power of two.
        self._images, self._weights = images, weights
        self._template_magnitude = max(float(np.abs(img).max()) for img in images)
        self._mask_magnitude = max((float(w.max()) for w in weights if w is not None), default=0.0)
        self._scaled: Kept[Matcher] = Kept(PLANS_KEPT)
        self._rescales = True  # False for the scaled Matchers themselves: scaled once, never again
        self.shapes = [img.shape[:2] for img in images]
        self._code = options.METHOD_CODES[self.method]
        pads = [options.padding_of(self.padding, h, w) for h, w in self.shapes]
        self._pad = tuple(max(p[i] for p in pads) for i in range(4))

        if not (_safe(self._template_magnitude) and _safe(self._mask_magnitude)):
            # Every call goes through _call_scaled; the Matcher's own kernels
            # (for its cost model and estimates) are made of scaled values, so
            # that none overflows.
            images = [np.ldexp(img, -_exponent(self._template_magnitude)) for img in images]
            weights = [None if w is None else np.ldexp(w, -_exponent(self._mask_magnitude)) for w in weights]
        # sqdiff is a sum of squared differences: the same for frame and
        # templates less one constant per channel. With that constant the
        # templates' mean, bright frames and templates no longer cancel
        # catastrophically in energy - 2 corr + tenergy.
        self._offset = None
        raw_energies = [float((img.astype(np.float64) ** 2 * (1.0 if w is None else w.astype(np.float64)[:, :, None] ** 2))
                              .sum()) for img, w in zip(images, weights)]
        # sqdiff_normed's norm is of the uncentred window and template: kept
        # apart (the windows' from their sums, the templates' here).
        if self._code in (SQDIFF, SQDIFF_NORMED):
            self._offset = np.mean([img.mean(axis=(0, 1), dtype=np.float64) for img in images], axis=0)
            if all(np.array_equal(img, np.round(img)) for img in images):
                self._offset = np.round(self._offset)  # integer data stays integer: exact in float32
            images = [img - self._offset.astype(np.float32) for img in images]
        by_key: dict[tuple[int, int, bool], list[int]] = {}
        for i, (img, w) in enumerate(zip(images, weights)):
            by_key.setdefault((*img.shape[:2], w is not None), []).append(i)
        self._groups: list[Group] = []
        for (h, w, masked), members in by_key.items():
            prepared = [
                template_kernels(images[i].transpose(2, 0, 1), weights[i], self._code) for i in members
            ]
            group = make_group(h, w, masked, members, prepared, channel_major=self.method == "ssim")
            group.tnorm_energy = (np.array([raw_energies[i] for i in members]) if self._code == SQDIFF_NORMED
                                  and self._offset is not None else group.tenergy)
            top, _, left, _ = options.padding_of(self.padding, h, w)
            group.place((self._pad[0] - top, self._pad[2] - left), self.stride)
            self._groups.append(group)
        # Large kernels first, so the cost model sees the frame's spectra as
        # paid for when smaller groups are considered.
        self._groups.sort(key=lambda g: -g.height * g.width)
        # Per frame shape: each group's path and, for the spectral path, its
        # kernel spectra. Bounded: a client cycling through frame sizes must
        # not grow the server's memory without end.
        self._plans: OrderedDict[tuple[int, int], list[tuple[str, list | None]]] = OrderedDict()
        self._lock = threading.Lock()
        # Work arrays kept from call to call (see Scratch), one set per call in flight.
        self._scratches: list[Scratch] = []
        self._gpu = None
        if self.device == "cuda" and _safe(self._template_magnitude) and _safe(self._mask_magnitude):
            from .cuda.matcher import CudaMatcher  # numba-cuda loads only here

            self._gpu = CudaMatcher(self)

    def __len__(self) -> int:
        return len(self.shapes)

    # -- per frame size ---------------------------------------------------

    def output_shape(self, index: int, frame_shape: tuple[int, int]) -> tuple[int, int]:
        """Shape of template ``index``'s map for frames of ``frame_shape`` (H, W)."""
        return options.map_shape(self.padding, self.stride, frame_shape, self.shapes[index])

    def _padded(self, frame_shape: tuple[int, int]) -> tuple[int, int]:
        return frame_shape[0] + self._pad[0] + self._pad[1], frame_shape[1] + self._pad[2] + self._pad[3]

    def _choices(self, frame_shape: tuple[int, int]) -> list[str]:
        """Each group's path for frames of ``frame_shape`` (the cost model; nothing is prepared)."""
        shape = spectral.transform_shape(*self._padded(frame_shape))
        choices, shared = [], False
        for group in self._groups:
            if self.algorithm != "auto":
                choice = self.algorithm
            else:
                out = self.output_shape(group.members[0], frame_shape)
                slow = direct_seconds(group, out)
                fast = spectral_seconds(group, shape, self.channels, shared)
                choice = "spectral" if fast < slow else "direct"
            shared = shared or choice == "spectral"
            choices.append(choice)
        return choices

    def _plan(self, frame_shape: tuple[int, int]) -> list[tuple[str, list | None]]:
        """Each group's path (and kernel spectra) for frames of ``frame_shape``, decided once per shape."""
        with self._lock:
            plan = self._plans.get(frame_shape)
            if plan is not None:
                self._plans.move_to_end(frame_shape)
                return plan
            shape = spectral.transform_shape(*self._padded(frame_shape))
            plan = []
            for group, choice in zip(self._groups, self._choices(frame_shape)):
                kspectra = None
                if choice == "spectral":
                    kspectra = spectral.kernel_spectra(group.kernels, shape, spectrum_dtype(group))
                plan.append((choice, kspectra))
            self._plans[frame_shape] = plan
            if len(self._plans) > PLANS_KEPT:
                self._plans.popitem(last=False)
            return plan

    def memory_estimate(self, frame_shape: tuple[int, int]) -> tuple[int, int]:
        """Bytes a call on a frame of ``frame_shape`` (H, W) needs: (working, retained).

        ``working`` is the most one call holds at once (padded planes,
        integral images, frame spectra, the maps it returns and the largest
        group's scratch); ``retained`` is what the plan for this shape keeps
        between calls (kernel spectra), up to ``PLANS_KEPT`` shapes. An upper
        bound, from the shapes alone: nothing is allocated.
        """
        height, width = self._padded(tuple(frame_shape))
        planes = self.channels
        working = planes * height * width * 4
        working += 2 * (height + 1) * (width + 1) * 8 * (self.channels if self.method == "ssim" else 1)
        if any(g.masked for g in self._groups):
            working += (planes + 1) * height * (width + 1) * 8  # row prefix sums
        shape = spectral.transform_shape(height, width)
        cells = shape[0] * shape[1]
        retained = maps = scratch = 0
        spectra = False
        for group, choice in zip(self._groups, self._choices(tuple(frame_shape))):
            out_h, out_w = self.output_shape(group.members[0], tuple(frame_shape))
            cells_out = out_h * out_w
            maps += len(group.members) * cells_out * 4
            group_scratch = len(group.kernels) * cells_out * 4 + 2 * cells_out * 8
            if choice == "spectral":
                itemsize = np.dtype(spectrum_dtype(group)).itemsize
                nonzero = int(group.kernels.reshape(len(group.kernels), group.kernels.shape[1], -1).any(axis=2).sum())
                retained += nonzero * cells * itemsize
                spectra = True
                group_scratch += 2 * spectral.WORKERS * cells * itemsize  # products and inverses in flight
            scratch = max(scratch, group_scratch)
        if spectra:
            working += planes * cells * 8
        # The frame as float32 and its centred copy, then a margin for what
        # the terms above leave out (measured: within it on VGA to 4096^2).
        working += 2 * self.channels * frame_shape[0] * frame_shape[1] * 4
        return (working + maps + scratch) * 3 // 2, retained

    def retained_bytes(self) -> int:
        """What this Matcher keeps between calls: its plans' kernel spectra and its work arrays."""
        with self._lock:
            plans = list(self._plans.values())
            scratch = sum(s.nbytes() for s in self._scratches)
        return scratch + sum(spectrum.nbytes for plan in plans for _, kspectra in plan if kspectra is not None
                             for kernel in kspectra for _, spectrum in kernel)

    def estimates(self, frame_shape: tuple[int, int]) -> tuple[float, float, float]:
        """The cost model's unscaled estimates of one call on a frame of ``frame_shape``, every group on
        one path: (the direct path's, the spectral path's frame part, its templates' part)."""
        shape = spectral.transform_shape(*self._padded(tuple(frame_shape)))
        unscaled = CostModel()
        direct = sum(direct_seconds(group, self.output_shape(group.members[0], tuple(frame_shape)), unscaled)
                     for group in self._groups)
        parts = [spectral_parts(group, shape, self.channels, i > 0) for i, group in enumerate(self._groups)]
        return direct, sum(p[0] for p in parts), sum(p[1] for p in parts)

    def algorithms(self, frame_shape: tuple[int, int]) -> dict[tuple[int, int], str]:
        """Which path each template size takes for frames of ``frame_shape``."""
        return {(g.height, g.width): c for g, (c, _) in zip(self._groups, self._plan(tuple(frame_shape)))}

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
        if self.padding != "valid" and self.border == "constant" and not _safe(abs(self.border_value)):
            return False
        if image.dtype == np.uint8:
            return True
        return _safe(max(-float(image.min()), float(image.max())))

    def _planes(self, image: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frame padded for this Matcher, as (C, H, W) float32 planes.

        ``image`` is ``frame`` as validated, HxWxC float32 or uint8. Returns
        the planes and what was taken off each (float64, exactly; zeros when
        nothing).
        """
        top, bottom, left, right = self._pad
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
            if self._offset is not None:
                means = self._offset.astype(np.float32)[:, None, None]
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
        if self._rescales and not (_safe(magnitude) and _safe(self._template_magnitude)
                                   and _safe(self._mask_magnitude)):
            return self._call_scaled(image.astype(np.float32, copy=False), magnitude, frame.dtype == np.uint8,
                                     cancelled)
        frame_shape = image.shape[:2]
        plan = self._plan(frame_shape)
        scratch = self._take_scratch()
        try:
            work = _FrameWork(self, *self._planes(image, frame), any(kspectra is not None for _, kspectra in plan),
                              scratch, cancelled)
            work.data_range = self.data_range or (255.0 if frame.dtype == np.uint8 else 1.0)
            results: list[np.ndarray | None] = [None] * len(self.shapes)
            for group, (_, kspectra) in zip(self._groups, plan):
                if cancelled is not None and cancelled():
                    raise Cancelled("the match was cancelled")
                out_shape = self.output_shape(group.members[0], frame_shape)
                if group.masked:
                    maps = self._match_masked(group, kspectra, out_shape, work)
                else:
                    maps = self._match_plain(group, kspectra, out_shape, work)
                for index, score_map in zip(group.members, maps):
                    results[index] = score_map
        finally:
            self._give_scratch(scratch)
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

    def _take_scratch(self) -> Scratch:
        """A set of work arrays for one call: one a call before this one returned, else a new one."""
        with self._lock:
            return self._scratches.pop() if self._scratches else Scratch()

    def _give_scratch(self, scratch: Scratch) -> None:
        with self._lock:
            if len(self._scratches) < SCRATCHES_KEPT:
                self._scratches.append(scratch)

    def _norm_offsets(self, work: "_FrameWork") -> np.ndarray:
        """What was taken off the planes, where the norm is of the window as it was (sqdiff_normed)."""
        return work.offsets if self._code == SQDIFF_NORMED else _NO_OFFSETS

    def _call_scaled(self, image: np.ndarray, magnitude: float, uint8: bool,
                     cancelled: Callable[[], bool] | None) -> list[np.ndarray]:
        """Match a frame (or templates, or mask weights) of extreme magnitude exactly, by powers of two.

        float32 sums of squares overflow near 1e19 and products underflow near
        1e-19. Frame, templates and float mask weights are scaled by powers of
        two (exact) to magnitudes near 1, matched, and the maps scaled back:
        the normalised methods do not change when frame and template are
        scaled; ccorr and ccoeff scale with both; the sqdiff pair and ssim
        (whose data range scales too) take frame and templates at one joint
        scale. Values past float32's range are clamped to its largest finite
        value, so every finite input gives a finite map.
        """
        frame_exp = _exponent(magnitude)
        template_exp = _exponent(self._template_magnitude)
        mask_exp = _exponent(self._mask_magnitude)
        if self._code in (SQDIFF, SQDIFF_NORMED, SSIM):  # one scale for frame and templates
            frame_exp = template_exp = max(frame_exp, template_exp)
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
        if self._code in (SQDIFF_NORMED, CCORR_NORMED, CCOEFF_NORMED, SSIM):
            return maps
        limit = float(np.finfo(np.float32).max)
        out = []
        for score_map, weights in zip(maps, self._weights):
            exponent = template_exp + frame_exp + (2 * mask_exp if weights is not None else 0)
            restored = np.ldexp(score_map.astype(np.float64), exponent)
            out.append(np.clip(restored, -limit, limit).astype(np.float32))
        return out

    def _correlations(self, group: Group, kspectra, out_shape, work: "_FrameWork",
                      restore: bool = False) -> np.ndarray:
        """The group's raw correlations, one map per kernel.

        ``kspectra`` is None on the direct path, the kernel spectra on the
        spectral one. ``restore``: add back the channel means taken off the
        members' kernels (the ccorr pair, see plan.template_kernels).
        """
        raw = np.empty((len(group.kernels), *out_shape), np.float32)
        tmeans = group.tmeans if restore else _NO_MEANS
        sums = work.sum_integral() if restore else _NO_SUMS
        oy, ox = group.offset
        if kspectra is None:
            correlate_direct(
                work.direct_planes(), group.direct_kernels, group.direct_active, oy, group.direct_ox,
                self.stride, tmeans, sums, ox, group.height, group.width, raw,
            )
            return raw
        wsums = work.window_sums(group, out_shape) if restore else None

        def store(k: int, corr: np.ndarray) -> None:
            if restore:
                add_means(corr, tmeans[k], wsums)
            raw[k] = corr

        work.spectral(group, kspectra, out_shape, store)
        return raw

    def _match_plain(self, group: Group, kspectra, out_shape, work: "_FrameWork") -> np.ndarray:
        """Scores of an unmasked group: (members, Ho, Wo)."""
        code = self._code
        if code in (CCORR, CCOEFF):
            # The correlation is the score.
            return self._correlations(group, kspectra, out_shape, work, restore=code == CCORR)[: len(group.members)]
        if code == SSIM:
            return self._match_ssim(group, kspectra, out_shape, work)
        oy, ox = group.offset
        out = np.empty((len(group.members), *out_shape), np.float32)
        sums, sqsum = work.integrals()
        tmeans = group.tmeans if code == CCORR_NORMED else _NO_MEANS
        if kspectra is None:
            match_direct(
                work.direct_planes(), group.direct_kernels, group.direct_active, oy, group.direct_ox,
                self.stride, sums, sqsum, ox, self.stride, group.height, group.width, group.tenergy,
                group.tnorm_energy, tmeans, code, work.flat(), self._norm_offsets(work), out,
            )
            return out
        energy = work.scratch.get("energy", out_shape)
        inv_norm = work.scratch.get("inverse norm", out_shape)
        window_stats(sums, sqsum, oy, ox, self.stride, group.height, group.width, code == CCOEFF_NORMED,
                     work.flat(), self._norm_offsets(work), energy, inv_norm)
        wsums = work.window_sums(group, out_shape) if len(tmeans) else None

        def score(k: int, corr: np.ndarray) -> None:
            if wsums is not None:
                add_means(corr, tmeans[k], wsums)
            map_scores(code, corr, energy, inv_norm, group.tenergy[k], group.tnorm_energy[k], out[k])

        work.spectral(group, kspectra, out_shape, score)
        return out

    def _match_ssim(self, group: Group, kspectra, out_shape, work: "_FrameWork") -> np.ndarray:
        """SSIM of an unmasked group: per-channel covariances, then the formula per window."""
        raw = self._correlations(group, kspectra, out_shape, work)
        sums, sqsums = work.channel_integrals()
        out = np.empty((len(group.members), *out_shape), np.float32)
        c1, c2 = (0.01 * work.data_range) ** 2, (0.03 * work.data_range) ** 2
        oy, ox = group.offset
        finish_ssim(
            raw, group.index, sums, sqsums, oy, ox, self.stride, group.height, group.width,
            np.stack([p.means for p in group.prepared]), np.stack([p.variances for p in group.prepared]), c1, c2,
            out,
        )
        return out

    def _match_masked(self, group: Group, kspectra, out_shape, work: "_FrameWork") -> np.ndarray:
        """Scores of a masked group: (members, Ho, Wo), mask by mask (see masked.py)."""
        raw = self._correlations(group, kspectra, out_shape, work)
        out = np.empty((len(group.members), *out_shape), np.float32)
        prefix, sqprefix = work.row_prefix()
        oy, ox = group.offset
        sets = group.mask_sets
        masked_scores(
            raw, sets.run_start, sets.rows, sets.starts, sets.ends, sets.weights, sets.squares, sets.member_start,
            sets.members, sets.msum, sets.msum2, sets.binary, sets.largest_square, group.tenergy,
            group.tnorm_energy, group.tsums, prefix, sqprefix, oy, ox, self.stride,
            self._code, work.flat(), self._norm_offsets(work), out,
        )
        return out


class _FrameWork:
    """What one frame's groups share, each computed on first use: the planes
    and their squares, integral images, frame spectra."""

    def __init__(self, matcher: Matcher, planes: np.ndarray, offsets: np.ndarray, any_spectral: bool,
                 scratch: Scratch, cancelled: Callable[[], bool] | None = None) -> None:
        self.planes = planes
        self.scratch = scratch
        self.offsets = offsets  # (C,) float64: what was taken off each plane
        self._flat: float | None = None
        self._stride = matcher.stride
        self._shape = spectral.transform_shape(*planes.shape[1:])
        self._phased: np.ndarray | None = None
        self._prefix = None
        self._integrals = None
        self._sum_integral: np.ndarray | None = None
        self._channel_integrals = None
        # The call's cancellation check, asked between the spectral path's kernels too.
        self.cancelled = cancelled
        self.data_range = 1.0  # ssim's L for this frame
        self._spectra: dict[type, list[np.ndarray]] = {}  # by the transforms' dtype
        self._nonnegative = any_spectral and bool(planes.min() >= 0.0)

    def direct_planes(self) -> np.ndarray:
        """The planes in the direct path's form: phase-split for a column stride."""
        if self._stride == 1:
            return self.planes
        if self._phased is None:
            self._phased = split_phases(self.planes, self._stride)
        return self._phased

    def row_prefix(self):
        """Float64 running sums along the planes' rows, and of their squares (masked statistics)."""
        if self._prefix is None:
            self._prefix = row_prefix(self.planes, self.scratch)
        return self._prefix

    def channel_integrals(self):
        if self._channel_integrals is None:
            self._channel_integrals = channel_integrals(self.planes)
        return self._channel_integrals

    def flat(self) -> float:
        """The variance at or below which a window of this frame is flat (see scores.flat_tolerance)."""
        if self._flat is None:
            self._flat = flat_tolerance(self.planes)
        return self._flat

    def window_sums(self, group: Group, out_shape) -> np.ndarray:
        """Each of ``group``'s windows' sum over all channels: (Ho, Wo) float64."""
        sums = self.scratch.get("window sums", out_shape)
        oy, ox = group.offset
        window_sums_map(self.sum_integral(), oy, ox, self._stride, group.height, group.width, sums)
        return sums

    def sum_integral(self) -> np.ndarray:
        """The integral image of the planes' sum over channels, (1, H+1, W+1) float64 (the ccorr pair)."""
        if self._integrals is not None and self.planes.shape[0] == 1:
            return self._integrals[0]
        if self._sum_integral is None:
            planes = self.planes if self.planes.shape[0] == 1 else self.planes.sum(axis=0, dtype=np.float64)[None]
            self._sum_integral = integral_images(planes, self.scratch, "channel-sum integral", squares=False)[0]
        return self._sum_integral

    def integrals(self):
        if self._integrals is None:
            self._integrals = integral_images(self.planes, self.scratch)
        return self._integrals

    def spectral(self, group: Group, kspectra, out_shape, consume) -> None:
        """Correlate the kernels of ``kspectra`` with the frame, each map into ``consume(k, map)``."""
        dtype = spectrum_dtype(group)
        if dtype not in self._spectra:
            # The buffers are taken here, on the calling thread (a Scratch is not shared between threads).
            buffers = [(self.scratch.get(f"padded plane {c}", self._shape, dtype),
                        self.scratch.get(f"plane spectrum {c}", self._shape, dtype)) for c in range(len(self.planes))]
            self._spectra[dtype] = spectral.frame_spectra(self.planes, self._shape, dtype, buffers)
        if self._nonnegative and group.nonnegative:
            # Transform rounding leaves tiny negatives where a sum of
            # non-negative products is 0; clamping keeps the ranges exact.
            def clamped(k: int, corr: np.ndarray) -> None:
                consume(k, np.maximum(corr, 0.0, out=corr))

            target = clamped
        else:
            target = consume
        oy, ox = group.offset
        spectral.correlate_spectral(self._spectra[dtype], kspectra, oy, ox, self._stride, out_shape, target,
                                    self.cancelled)
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("the match was cancelled")


def match(frame: np.ndarray, templates: Sequence[np.ndarray], **settings) -> list[np.ndarray]:
    """Match ``templates`` against one ``frame``: ``Matcher(templates, **settings)(frame)``.

    See :class:`Matcher` for the settings. Prepare a Matcher once instead when
    matching many frames against the same bank.
    """
    return Matcher(templates, **settings)(frame)
