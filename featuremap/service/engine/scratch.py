"""Work arrays a Matcher keeps from call to call (:class:`Scratch`), and the pool that lends them."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

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
        """The bytes this set holds."""
        return sum(a.nbytes for a in self._arrays.values())


class ScratchPool:
    """The sets of work arrays calls return, lent to the next calls (``SCRATCHES_KEPT`` at most)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: list[Scratch] = []

    def take(self) -> Scratch:
        """A set for one call: one that an earlier call returned, else a new one."""
        with self._lock:
            return self._kept.pop() if self._kept else Scratch()

    def give(self, scratch: Scratch) -> None:
        """Return a call's set, kept for a later call while the pool has room."""
        with self._lock:
            if len(self._kept) < SCRATCHES_KEPT:
                self._kept.append(scratch)

    def nbytes(self) -> int:
        """The bytes the kept sets hold."""
        with self._lock:
            return sum(s.nbytes() for s in self._kept)
