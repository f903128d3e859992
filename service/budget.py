"""The memory budget: bytes the server's matching may hold at once, shared by every call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import LimitExceeded


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

    @contextmanager
    def hold(self, nbytes: int, cancelled: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """Reserve ``nbytes`` for the duration of the block.

        Raises
        ------
        LimitExceeded
            ``nbytes`` is over the whole budget (RESOURCE_EXHAUSTED, naming the flag).
        """
        if nbytes > self.total:
            raise LimitExceeded(f"this request needs about {nbytes >> 20} MiB to match, over the memory budget of "
                                f"{self.total >> 20} MiB (memory_budget): send smaller frames or fewer templates")
        with self._cond:
            while self._used + nbytes > self.total:
                if cancelled():
                    raise LimitExceeded("the server's memory budget stayed full until the call ended")
                self._cond.wait(0.1)
            self._used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self._used -= nbytes
                self._cond.notify_all()
