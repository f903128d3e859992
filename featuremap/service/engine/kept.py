"""A bounded map of things made once and kept, least recently used out first; thread-safe.

Bounded in entries and, given a size function, in bytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Kept(Generic[V]):
    """Values by key, at most ``limit`` of them; each made once, outside the lock.

    Two threads asking for the same missing key may both make it (the last
    one made is kept): making happens outside the lock so that one slow
    preparation never holds up the others.
    """

    def __init__(self, limit: int, *, max_bytes: int | None = None, size: Callable[[V], int] | None = None) -> None:
        if (max_bytes is None) != (size is None):
            raise ValueError("max_bytes and size go together")
        self.limit = limit
        self.max_bytes = max_bytes
        self._size = size
        self._bytes = 0
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value kept for ``key``, or ``make()``'s, kept from now on."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        made = make()
        size = self._size(made) if self._size is not None else 0
        with self._lock:
            if key in self._items:  # made twice at once: the last one made is kept
                self._bytes -= self._sizes.pop(key, 0)
            self._items[key] = made
            self._items.move_to_end(key)
            self._sizes[key] = size
            self._bytes += size
            # Least recently used out, never the one just made (its caller holds it anyway).
            while len(self._items) > 1 and (len(self._items) > self.limit
                                            or (self.max_bytes is not None and self._bytes > self.max_bytes)):
                old, _ = self._items.popitem(last=False)
                self._bytes -= self._sizes.pop(old, 0)
        return made

    def nbytes(self) -> int:
        """Bytes of the values kept now (0 without a size function)."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list[Hashable]:
        """The keys kept now, least recently used first."""
        with self._lock:
            return list(self._items)

    def key_of(self, value: V) -> Hashable | None:
        """The key ``value`` (that very object) is kept under, or None."""
        with self._lock:
            return next((k for k, v in reversed(self._items.items()) if v is value), None)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._bytes -= self._sizes.pop(key, 0)
