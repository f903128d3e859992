"""A bounded map of things made once and kept, least recently used out first; thread-safe."""

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

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value kept for ``key``, or ``make()``'s, kept from now on."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        made = make()
        with self._lock:
            self._items[key] = made
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return made

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
