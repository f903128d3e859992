"""GPU batching: frames of every call that match the same prepared Matcher go to the device together.

A GPU does a batch of 16 VGA frames in little more time than one, so frames
that share templates and options (the same prepared Matcher), shape and peak
settings wait a short, bounded time for company. A frame waits at most
``max_wait``, and a realtime stream's frame at most its stream's frame
interval (from the frames' capture times): a batch never makes a live
stream fall behind. Each worker thread has its own CUDA stream
(engine.cuda.matcher.Workspace) and works on one batch at a time; a batch
must fit the worker's share of the GPU memory budget, and is split until it
does (a single frame that cannot fit is refused).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..engine import Cancelled, Found, Matcher
from ..errors import LimitExceeded
from .reports import NoReports, Reports


class Pacing:
    """A stream's frame interval, from the capture times of every frame it sends (seconds). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: float | None = None
        self.interval: float | None = None  # between the last two frames that had capture times

    def note(self, capture_seconds: float | None) -> None:
        """Note a frame's capture time (None or 0: the frame had none)."""
        if not capture_seconds:
            return
        with self._lock:
            if self._last is not None and capture_seconds > self._last:
                self.interval = capture_seconds - self._last
            self._last = capture_seconds


@dataclass
class _Request:
    frame: np.ndarray
    deadline: float  # time.monotonic() by which its batch must start
    arrived: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)


@dataclass
class _Batch:
    matcher: Matcher
    settings: dict
    requests: list[_Request] = field(default_factory=list)


class GpuBatcher:
    """Batches frames for GPU Matchers and runs them on ``workers`` threads.

    Parameters
    ----------
    workers : int
        Threads that run batches, each with its own CUDA stream.
    max_batch : int
        Most frames in one batch.
    max_wait : float
        Longest a frame waits for its batch to fill, in seconds.
    memory_budget : int
        GPU bytes all workers' batches may use together; each worker gets an equal share.
    reports : Reports, optional
        Where batch sizes, waits and GPU time are reported.
    """

    def __init__(self, *, workers: int, max_batch: int, max_wait: float, memory_budget: int,
                 reports: Reports | None = None) -> None:
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.share = memory_budget // workers
        self._reports = reports or NoReports()
        self._cond = threading.Condition()
        self._pending: dict[Hashable, _Batch] = {}
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"featuremap-gpu-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def find(self, matcher: Matcher, frame: np.ndarray, *, wait: float | None = None,
             cancelled: Callable[[], bool] = lambda: False, **settings) -> Found:
        """Match one frame in the next batch of its kind: ``matcher.find([frame], **settings)[0]``.

        ``wait``: the longest this frame may wait for company (at most
        ``max_wait``; a realtime stream passes its frame interval).

        Raises
        ------
        OptionError
            The frame, as the engine refuses it (before it joins a batch).
        Cancelled
            ``cancelled()`` said so before the frame's batch started.
        LimitExceeded
            The frame alone does not fit a worker's share of the GPU memory budget.
        """
        frame = matcher.check_frame(frame)  # a bad frame is refused here, never poisons a batch
        patience = self.max_wait if wait is None else max(0.0, min(wait, self.max_wait))
        request = _Request(frame, time.monotonic() + patience)
        key = (id(matcher), frame.shape, frame.dtype.str, repr(sorted(settings.items())))
        with self._cond:
            batch = self._pending.get(key)
            if batch is None:
                batch = self._pending[key] = _Batch(matcher, settings)
            batch.requests.append(request)
            self._cond.notify_all()
        while True:
            try:
                return request.future.result(timeout=0.05)
            except TimeoutError:
                if cancelled() and self._withdraw(key, request):
                    raise Cancelled("the call ended before its frame's batch ran") from None

    def _withdraw(self, key: Hashable, request: _Request) -> bool:
        """Take a request back if its batch has not started."""
        with self._cond:
            batch = self._pending.get(key)
            if batch is None or request not in batch.requests:
                return False
            batch.requests.remove(request)
            if not batch.requests:
                del self._pending[key]
            return True

    def stop(self) -> None:
        """Let the workers finish what is queued, then end."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _next(self) -> tuple[_Batch, list[_Request]] | None:
        """The next batch to run, once it is full or its most urgent frame may wait no longer."""
        with self._cond:
            while True:
                if not self._pending:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                # A full batch goes first; else the one whose most urgent frame is due soonest, once it is due.
                key, batch = max(self._pending.items(), key=lambda item: len(item[1].requests))
                now = time.monotonic()
                if len(batch.requests) < self.max_batch:
                    key, batch = min(self._pending.items(),
                                     key=lambda item: min(r.deadline for r in item[1].requests))
                    due = min(r.deadline for r in batch.requests)
                    if now < due and not self._stopping:
                        self._cond.wait(due - now)
                        continue
                taken = batch.requests[: self.max_batch]
                batch.requests = batch.requests[self.max_batch:]
                if not batch.requests:
                    del self._pending[key]
                self._reports.gpu_batch_waited(now - min(r.arrived for r in taken))
                return batch, taken

    def _work(self) -> None:
        while True:
            found = self._next()
            if found is None:
                return
            batch, requests = found
            for part in self._fitting(batch, requests):
                self._run(batch, part)

    def _fitting(self, batch: _Batch, requests: list[_Request]) -> list[list[_Request]]:
        """The requests in runs that fit this worker's share of the GPU memory (refusing what never fits)."""
        frame = requests[0].frame
        need = batch.matcher.device_bytes(frame.shape[:2], frame.dtype, 1)
        if need > self.share:
            error = LimitExceeded(
                f"this frame needs about {need >> 20} MiB of GPU memory to match, over one GPU worker's share of "
                f"{self.share >> 20} MiB (gpu_memory_budget / gpu_workers): send smaller frames or fewer templates")
            for request in requests:
                request.future.set_exception(error)
            return []
        size = len(requests)
        while size > 1 and batch.matcher.device_bytes(frame.shape[:2], frame.dtype, size) > self.share:
            size //= 2
        return [requests[i:i + size] for i in range(0, len(requests), size)]

    def _run(self, batch: _Batch, requests: list[_Request]) -> None:
        started = time.perf_counter()
        try:
            results = batch.matcher.find([r.frame for r in requests], **batch.settings)
        except BaseException as error:  # every waiting call gets the error; the worker lives on
            for request in requests:
                request.future.set_exception(error)
            return
        self._reports.gpu_batch_done(len(requests), time.perf_counter() - started)
        for request, result in zip(requests, results):
            request.future.set_result(result)
