"""Each group's path per frame shape (the cost model's choice) and its kernel spectra, kept for a few shapes."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from . import spectral
from .groups import PreparedTemplates
from .plan import CostModel, direct_seconds, spectral_parts, spectral_seconds, spectrum_dtype
from .scores import SSIM

#: Frame shapes whose plans (and kernel spectra) a Matcher keeps.
PLANS_KEPT = 4

#: One group's plan: its path, and its kernel spectra on the spectral path (None on the direct one).
GroupPlan = tuple[str, list | None]


class Plans:
    """The paths of a prepared bank's groups for each frame shape, decided once per shape.

    Bounded: a client cycling through frame sizes must not grow the server's
    memory without end (``PLANS_KEPT`` shapes, the least recently used go).
    Safe to use from many threads.
    """

    def __init__(self, prepared: PreparedTemplates, algorithm: str) -> None:
        self.prepared = prepared
        self.algorithm = algorithm
        self._plans: OrderedDict[tuple[int, int], list[GroupPlan]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._plans)

    def choices(self, frame_shape: tuple[int, int]) -> list[str]:
        """Each group's path for frames of ``frame_shape`` (the cost model; nothing is prepared)."""
        bank = self.prepared
        shape = spectral.transform_shape(*bank.padded(frame_shape))
        choices, shared = [], False
        for group in bank.groups:
            if self.algorithm != "auto":
                choice = self.algorithm
            else:
                out = bank.output_shape(group.members[0], frame_shape)
                slow = direct_seconds(group, out)
                fast = spectral_seconds(group, shape, bank.channels, shared)
                choice = "spectral" if fast < slow else "direct"
            shared = shared or choice == "spectral"
            choices.append(choice)
        return choices

    def get(self, frame_shape: tuple[int, int]) -> list[GroupPlan]:
        """Each group's path (and kernel spectra) for frames of ``frame_shape``."""
        with self._lock:
            plan = self._plans.get(frame_shape)
            if plan is not None:
                self._plans.move_to_end(frame_shape)
                return plan
            shape = spectral.transform_shape(*self.prepared.padded(frame_shape))
            plan = []
            for group, choice in zip(self.prepared.groups, self.choices(frame_shape)):
                kspectra = None
                if choice == "spectral":
                    kspectra = spectral.kernel_spectra(group.kernels, shape, spectrum_dtype(group))
                plan.append((choice, kspectra))
            self._plans[frame_shape] = plan
            if len(self._plans) > PLANS_KEPT:
                self._plans.popitem(last=False)
            return plan

    def retained_bytes(self) -> int:
        """The bytes the kept plans' kernel spectra hold."""
        with self._lock:
            plans = list(self._plans.values())
        return sum(spectrum.nbytes for plan in plans for _, kspectra in plan if kspectra is not None
                   for kernel in kspectra for _, spectrum in kernel)

    def memory_estimate(self, frame_shape: tuple[int, int]) -> tuple[int, int]:
        """Bytes a call on a frame of ``frame_shape`` (H, W) needs: (working, retained).

        ``working`` is the most one call holds at once (padded planes,
        integral images, frame spectra, the maps it returns and the largest
        group's scratch); ``retained`` is what the plan for this shape keeps
        between calls (kernel spectra), up to ``PLANS_KEPT`` shapes. An upper
        bound, from the shapes alone: nothing is allocated.
        """
        bank = self.prepared
        frame_shape = tuple(frame_shape)
        height, width = bank.padded(frame_shape)
        planes = bank.channels
        working = planes * height * width * 4
        working += 2 * (height + 1) * (width + 1) * 8 * (bank.channels if bank.code == SSIM else 1)
        if any(g.masked for g in bank.groups):
            working += (planes + 1) * height * (width + 1) * 8  # row prefix sums
        shape = spectral.transform_shape(height, width)
        cells = shape[0] * shape[1]
        retained = maps = scratch = 0
        spectra = False
        for group, choice in zip(bank.groups, self.choices(frame_shape)):
            out_h, out_w = bank.output_shape(group.members[0], frame_shape)
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
        working += 2 * bank.channels * frame_shape[0] * frame_shape[1] * 4
        return (working + maps + scratch) * 3 // 2, retained

    def estimates(self, frame_shape: tuple[int, int]) -> tuple[float, float, float]:
        """The cost model's unscaled estimates of one call on a frame of ``frame_shape``, every group on
        one path: (the direct path's, the spectral path's frame part, its templates' part)."""
        bank = self.prepared
        frame_shape = tuple(frame_shape)
        shape = spectral.transform_shape(*bank.padded(frame_shape))
        unscaled = CostModel()
        direct = sum(direct_seconds(group, bank.output_shape(group.members[0], frame_shape), unscaled)
                     for group in bank.groups)
        parts = [spectral_parts(group, shape, bank.channels, i > 0) for i, group in enumerate(bank.groups)]
        return direct, sum(p[0] for p in parts), sum(p[1] for p in parts)
