"""Threads a test starts, whose failures fail the test.

A test that starts threads and only joins them passes when every thread dies:
the exception is printed and lost. :class:`Workers` keeps each thread's first
exception and re-raises it in the test's own thread at :meth:`Workers.join`
(and when the ``workers`` fixture is torn down, should a test not join);
a thread still running past the join's timeout fails the test as well.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest


class WorkerFailed(AssertionError):
    """A worker thread is still running when the test needed it finished."""


class Workers:
    """Start threads with :meth:`start`; :meth:`join` waits for them and re-raises the first failure."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()

    def start(self, target: Callable[..., object], *args: object, name: str | None = None) -> threading.Thread:
        """Run ``target(*args)`` on a new daemon thread; its exception, if any, is kept for :meth:`join`."""

        def run() -> None:
            try:
                target(*args)
            except BaseException as error:  # noqa: BLE001 - every failure is the test's
                with self._lock:
                    self._errors.append(error)

        thread = threading.Thread(target=run, name=name or f"worker-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def map(self, target: Callable[[int], object], count: int) -> None:
        """Start ``count`` threads running ``target(i)`` and join them all."""
        for i in range(count):
            self.start(target, i)
        self.join()

    def join(self, timeout: float = 120.0) -> None:
        """Wait for every thread (each at most ``timeout`` s); re-raise the first exception a thread raised."""
        for thread in self._threads:
            thread.join(timeout)
        alive = [t.name for t in self._threads if t.is_alive()]
        self.raise_first()
        if alive:
            raise WorkerFailed(f"threads still running after {timeout} s: {', '.join(alive)}")

    def raise_first(self) -> None:
        """Re-raise the first exception any thread raised so far (nothing if none did)."""
        with self._lock:
            if self._errors:
                raise self._errors[0]


@pytest.fixture
def workers():
    """Threads whose exceptions fail the test: joined, and the first failure re-raised, at teardown too."""
    started = Workers()
    yield started
    started.join()
