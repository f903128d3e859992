"""What one frame's groups share during a call: planes, integral images, frame spectra, made on first use."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import spectral
from .direct import split_phases
from .integral import channel_integrals, integral_images, row_prefix
from .plan import Group, spectrum_dtype
from .scores import SQDIFF_NORMED, flat_tolerance, window_sums_map
from .scratch import Scratch

_NO_OFFSETS = np.zeros(0)


class Cancelled(Exception):
    """A match stopped because its caller's ``cancelled()`` said so."""


class FrameWork:
    """What one frame's groups share, each computed on first use: the planes
    and their squares, integral images, frame spectra.

    Parameters
    ----------
    planes : numpy.ndarray
        The padded frame as (C, H, W) float32 planes.
    offsets : numpy.ndarray
        (C,) float64: what was taken off each plane.
    stride : int
        The maps' sampling step.
    any_spectral : bool
        Whether any group takes the spectral path.
    scratch : Scratch
        The call's work arrays.
    cancelled : callable, optional
        The call's cancellation check, asked between the spectral path's kernels too.
    """

    def __init__(self, planes: np.ndarray, offsets: np.ndarray, stride: int, any_spectral: bool,
                 scratch: Scratch, cancelled: Callable[[], bool] | None = None) -> None:
        self.planes = planes
        self.scratch = scratch
        self.offsets = offsets
        self.stride = stride
        self.cancelled = cancelled
        self.data_range = 1.0  # ssim's L for this frame
        self._flat: float | None = None
        self._shape = spectral.transform_shape(*planes.shape[1:])
        self._phased: np.ndarray | None = None
        self._prefix = None
        self._integrals = None
        self._sum_integral: np.ndarray | None = None
        self._channel_integrals = None
        self._spectra: dict[type, list[np.ndarray]] = {}  # by the transforms' dtype
        self._nonnegative = any_spectral and bool(planes.min() >= 0.0)

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` when the caller has said so."""
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("the match was cancelled")

    def norm_offsets(self, code: int) -> np.ndarray:
        """What was taken off the planes, where the norm is of the window as it was (sqdiff_normed)."""
        return self.offsets if code == SQDIFF_NORMED else _NO_OFFSETS

    def direct_planes(self) -> np.ndarray:
        """The planes in the direct path's form: phase-split for a column stride."""
        if self.stride == 1:
            return self.planes
        if self._phased is None:
            self._phased = split_phases(self.planes, self.stride)
        return self._phased

    def row_prefix(self):
        """Float64 running sums along the planes' rows, and of their squares (masked statistics)."""
        if self._prefix is None:
            self._prefix = row_prefix(self.planes, self.scratch)
        return self._prefix

    def channel_integrals(self):
        """Per-channel integral images of the planes and of their squares (ssim)."""
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
        window_sums_map(self.sum_integral(), oy, ox, self.stride, group.height, group.width, sums)
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
        """Integral images of the planes (summed over channels) and of their squares."""
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
        spectral.correlate_spectral(self._spectra[dtype], kspectra, oy, ox, self.stride, out_shape, target,
                                    self.cancelled)
        self.check_cancelled()
