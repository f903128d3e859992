"""One StreamMatch call as a pipeline.

StreamMatch runs as a pipeline per stream: a reader thread takes requests off
the wire and decodes frames, a dispatcher hands them in order to the server's
compute pool (as many frames at once as there are cores, so the serial parts
of one frame overlap the next), and the handler takes the results back in
order, encodes and sends them. So frame n+1 is decoded and frame n-1 encoded
while frame n is computed. The queues between the stages are bounded
(``max_in_flight``): a client that stops reading fills them, then the reader
stops reading and gRPC flow control stalls that client, while server memory
stays put. In realtime mode the reader keeps only the newest pending frame,
the frames it replaces are reported as skipped, and one result at a time is
in flight.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from featuremap.v1 import featuremap_pb2 as pb

from ..errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, Malformed
from .batching import Pacing
from .budget import Reservation
from .frames import FrameProcessor, PoseMemory

_POLL = 0.1  # seconds between checks that a stream is still wanted


class _Queue:
    """A small bounded FIFO whose waits give up when the stream is over."""

    def __init__(self, capacity: int, stopped: threading.Event) -> None:
        self._items: collections.deque = collections.deque()
        self.capacity = capacity
        self._stopped = stopped
        self._cond = threading.Condition()

    def empty(self) -> bool:
        with self._cond:
            return not self._items

    def take_frame(self) -> tuple | None:
        """Remove and return the last item if it is a frame waiting (realtime: the stale one)."""
        with self._cond:
            if self._items and self._items[-1][0] == "frame":
                item = self._items.pop()
                self._cond.notify_all()
                return item
            return None

    def put(self, item, *, replace_frame: bool = False) -> tuple | None:
        """Append ``item``; with ``replace_frame``, take the place of a pending frame and return it."""
        with self._cond:
            if replace_frame and self._items and self._items[-1][0] == "frame":
                replaced = self._items.pop()
                self._items.append(item)
                self._cond.notify_all()
                return replaced
            while len(self._items) >= self.capacity:
                if self._stopped.is_set():
                    return None
                self._cond.wait(_POLL)
            self._items.append(item)
            self._cond.notify_all()
            return None

    def get(self, idle: Callable[[], bool] = lambda: False):
        """The next item; ("stop",) once the stream is over, ("idle",) once ``idle()`` says so while empty."""
        with self._cond:
            while not self._items:
                if self._stopped.is_set():
                    return ("stop",)
                if idle():
                    return ("idle",)
                self._cond.wait(_POLL)
            item = self._items.popleft()
            self._cond.notify_all()
            return item


class StreamPipeline:
    """One StreamMatch call: reader and dispatcher threads, results yielded in order.

    ``frames`` plans configs, decodes and processes frames; the pipeline only
    moves them along.
    """

    def __init__(self, frames: FrameProcessor, requests, on_close: Callable[[Callable[[], None]], object],
                 gone: tuple[type[BaseException], ...] = ()) -> None:
        self._frames = frames
        self._requests = requests
        self._stopped = threading.Event()
        capacity = self._capacity = frames.max_in_flight
        self._inbox = _Queue(capacity, self._stopped)
        self._outbox = _Queue(capacity, self._stopped)
        self._skipped: list[int] = []
        self._skipped_lock = threading.Lock()
        # The stream's frame interval, from every frame's capture time (skipped ones too): a realtime
        # frame waits for a GPU batch no longer than that.
        self._pacing = Pacing()
        # When the stream last showed life: a request read or a result sent (see _idle).
        self._active = time.monotonic()
        # The memory budget's reservations of this stream's frames, from arrival to answer; all
        # released when the stream ends, wherever its frames were.
        self._held: set[Reservation] = set()
        self._held_lock = threading.Lock()
        self._closed = False
        self._waiting_for_memory = False  # the reader waits for room: the server is slow, not the client
        self._idle_seconds = frames.stream_idle_seconds
        self._gone = gone  # what reading the requests raises when the client has gone
        on_close(self._stopped.set)

    def stop(self) -> None:
        self._stopped.set()

    def run(self):
        """Start the threads; yield a StreamMatchResponse (as wire bytes) per answered frame."""
        threads = [threading.Thread(target=self._read, name="featuremap-read", daemon=True),
                   threading.Thread(target=self._work, name="featuremap-work", daemon=True)]
        for thread in threads:
            thread.start()
        try:
            yield from self._answers()
        finally:
            self._stopped.set()
            with self._held_lock:
                self._closed = True
                held, self._held = self._held, set()
            for reservation in held:
                reservation.release()

    def _hold(self, frame: pb.Frame, realtime: bool) -> Reservation | None:
        """Reserve the frame's bytes (a realtime frame: only if they fit now; None: they do not)."""
        self._waiting_for_memory = True
        try:
            reservation = self._frames.reserve_frame(frame, self._stopped.is_set, wait=not realtime)
        finally:
            self._waiting_for_memory = False
            self._active = time.monotonic()
        if reservation is None:
            return None
        with self._held_lock:
            if not self._closed:
                self._held.add(reservation)
                return reservation
        reservation.release()  # the stream ended meanwhile
        return None

    def _let_go(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            with self._held_lock:
                self._held.discard(reservation)
            reservation.release()

    def _answers(self):
        while True:
            item = self._outbox.get(self._idle)
            if item[0] == "result":
                _, pending, skipped, reservation = item
                # In order, whatever order they finish in.
                try:
                    answer = self._frames.respond(pb.StreamMatchResponse, pending.result(), "StreamMatch", skipped)
                finally:
                    self._let_go(reservation)
                yield answer
                self._active = time.monotonic()
            elif item[0] == "error":
                raise item[1]
            elif item[0] == "idle":
                self._stopped.set()
                raise DeadlineExceeded(f"no frame for {self._idle_seconds:g} s: the stream was ended to free its "
                                       "slot (stream_idle_seconds); open a new one when frames come again")
            else:  # "end" or "stop"
                return

    def _idle(self) -> bool:
        """Nothing in flight (the outbox is empty: asked only then), the reader not waiting for room, and
        nothing read or sent for a while."""
        return (self._inbox.empty() and not self._waiting_for_memory
                and time.monotonic() - self._active > self._idle_seconds)

    def _read(self) -> None:
        """Requests off the wire, frames decoded, into the inbox, in order."""
        realtime = None  # None until the first config
        try:
            for request in self._requests:
                self._active = time.monotonic()
                if isinstance(request, Malformed):
                    raise request.error
                kind = request.WhichOneof("kind")
                if kind == "config":
                    realtime = request.config.realtime
                    self._inbox.put(("config", request.config))
                elif kind == "frame":
                    if realtime is None:
                        raise FailedPrecondition("a frame came before any config: send a MatchConfig first")
                    if request.frame.HasField("capture_time"):
                        self._pacing.note(request.frame.capture_time.ToNanoseconds() / 1e9)
                    # Charged to the memory budget from here until answered: a stream waits here
                    # (and gRPC's flow control slows its client) while the budget is full; a
                    # realtime one drops the frame as stale instead.
                    held = self._hold(request.frame, realtime)
                    if realtime:
                        if held is None:
                            # No room: the stale frame waiting goes first, so that the newest is kept.
                            stale = self._inbox.take_frame()
                            if stale is not None:
                                self._let_go(stale[3])
                                self._skip(stale[1].sequence)
                                held = self._hold(request.frame, realtime)
                        if held is None:
                            self._skip(request.frame.sequence)
                            continue
                        # Decoded on the pool: a frame that is replaced costs nothing.
                        replaced = self._inbox.put(("frame", request.frame, None, held), replace_frame=True)
                        if replaced is not None:
                            self._let_go(replaced[3])
                            self._skip(replaced[1].sequence)
                    else:
                        try:
                            decoded = self._frames.decode(request.frame)
                        except BaseException:
                            self._let_go(held)
                            raise
                        self._inbox.put(("frame", request.frame, decoded, held))
                else:
                    raise InvalidArgument("a StreamMatchRequest must set config or frame")
                if self._stopped.is_set():
                    return
            self._inbox.put(("end",))
        except self._gone:
            self._stopped.set()  # the client went away
        except Exception as error:  # noqa: BLE001 - reported in order, after the frames before it
            self._inbox.put(("error", error))

    def _skip(self, sequence: int) -> None:
        with self._skipped_lock:
            self._skipped.append(sequence)
        self._frames.skipped()

    def _work(self) -> None:
        """Inbox items, in order: configs resolved here, frames handed to the compute pool.

        The outbox receives the pending results in frame order; several frames
        of a stream may be computed at once (the serial parts of one frame
        leave cores idle that the next frame can use), and the handler takes
        them back in order.
        """
        plan = None
        poses = PoseMemory()  # the stream's last poses: each frame searches near them first
        while True:
            item = self._inbox.get()
            try:
                if item[0] == "config":
                    plan = self._frames.plan(item[1])
                    poses = PoseMemory()
                    # Realtime wants the newest frame, not a queue of them:
                    # one result in flight, the rest of the time frames wait
                    # in the inbox, where newer ones replace them.
                    self._outbox.capacity = 1 if plan.options.realtime else self._capacity
                    continue
                if item[0] != "frame":
                    self._outbox.put(item)
                    return
                _, frame, decoded, held = item
                with self._skipped_lock:
                    skipped, self._skipped = self._skipped, []
                pending = self._frames.submit(plan, frame, decoded, self._stopped.is_set, "StreamMatch", poses,
                                              self._pacing)
                # The frame's memory is free once it is matched (its answer waits in the outbox, a
                # few of them at most): a client that stops reading holds no frame memory for long.
                pending.add_done_callback(lambda _, held=held: self._let_go(held))
                self._outbox.put(("result", pending, skipped, held))
            except Exception as error:  # noqa: BLE001
                self._outbox.put(("error", error))
                return
