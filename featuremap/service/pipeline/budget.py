"""The memory budget: bytes the server's matching may hold at once, shared by every call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import LimitExceeded


class MemoryBudget:
    """Bytes the server's matching may hold at once, shared by every call.

    A call reserves its estimate before it starts and gives it back when
    done; a call that cannot fit at all is refused, one that cannot fit yet
    waits (while ``cancelled()`` says it is still wanted).
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    def reserve(self, nbytes: int, cancelled: Callable[[], bool] = lambda: False, *,
                wait: bool = True, timeout: float | None = None) -> Reservation | None:
        """Reserve ``nbytes`` until the reservation is released (by whichever thread is done with it).

        Waits while the budget is full (as long as ``cancelled()`` says the
        caller still wants it, and at most ``timeout`` seconds when given);
        with ``wait=False`` returns None at once instead.

        Raises
        ------
        LimitExceeded
            ``nbytes`` is over the whole budget, or the budget stayed full until the caller was
            cancelled or its wait ran out.
        """
        if nbytes > self.total:
            raise LimitExceeded(f"this request needs about {nbytes >> 20} MiB to match, over the memory budget of "
                                f"{self.total >> 20} MiB (memory_budget): send smaller frames or fewer templates")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._used + nbytes > self.total:
                if not wait:
                    return None
                if cancelled():
                    raise LimitExceeded("the server's memory budget stayed full until the call ended")
                if deadline is not None and time.monotonic() > deadline:
                    raise LimitExceeded(f"the server's memory budget stayed full for {timeout:g} s (memory_budget): "
                                        "retry later, or send smaller frames")
                self._cond.wait(0.1)
            self._used += nbytes
        return Reservation(self, nbytes)

    def _release(self, nbytes: int) -> None:
        with self._cond:
            self._used -= nbytes
            self._cond.notify_all()

    @contextmanager
    def hold(self, nbytes: int, cancelled: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """Reserve ``nbytes`` for the duration of the block (see :meth:`reserve`).

        Raises
        ------
        LimitExceeded
            ``nbytes`` is over the whole budget (RESOURCE_EXHAUSTED, naming the flag).
        """
        reservation = self.reserve(nbytes, cancelled)
        try:
            yield
        finally:
            reservation.release()


class Reservation:
    """Bytes of a :class:`MemoryBudget` held until :meth:`release` (once; later calls do nothing)."""

    def __init__(self, budget: MemoryBudget, nbytes: int) -> None:
        self.nbytes = nbytes
        self._budget: MemoryBudget | None = budget
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            budget, self._budget = self._budget, None
        if budget is not None:
            budget._release(self.nbytes)
