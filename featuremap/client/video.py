"""Frame sources through OpenCV: video files, cameras, RTSP/HTTP streams, images and folders."""

from __future__ import annotations

import glob
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import grpc
import numpy as np

from .errors import FeatureMapError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


#: Seconds a live source may stay silent (opening, or between frames) before it counts as lost.
DEFAULT_TIMEOUT = 5.0
#: Reconnection attempts after a live source is lost (with exponential backoff), by default.
DEFAULT_RECONNECTS = 5
_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 8.0


class SourceError(FeatureMapError, OSError):
    """A source that cannot be opened or read, or was lost for good; the message names it.

    Part of the client's one tree (a :class:`FeatureMapError`, code
    UNAVAILABLE, raised by the client) and an ``OSError``, as a file that
    cannot be read is.
    """

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, message)

    def __str__(self) -> str:
        return self.details  # the source named, without a status no server gave


@dataclass(frozen=True)
class SourceEvent:
    """Something that happened to a live source: ``kind`` is "source lost", "reconnected" or "gave up"."""

    kind: str
    time: float  # wall clock, seconds
    detail: str


class _LiveReader:
    """Drains a live source on its own thread and keeps only the newest frame.

    A camera or stream delivers frames whether or not anyone takes them; read
    only when there is room to send one, they queue in OpenCV and the socket
    and the lag grows without bound. Here every frame is read as it comes,
    the one not yet taken is replaced (and counted as dropped), and the
    consumer always gets the newest. A source silent past the timeout, or
    closed, is lost: it is reopened with exponential backoff, up to
    ``max_reconnects`` times in a row.
    """

    def __init__(self, spec: str, open_capture: Callable[[], cv2.VideoCapture], capture: cv2.VideoCapture, *,
                 max_reconnects: int) -> None:
        self._spec = spec
        self._open = open_capture
        self._capture: cv2.VideoCapture | None = capture
        self._max_reconnects = max_reconnects
        self._cond = threading.Condition()
        self._slot: tuple[int, float, np.ndarray] | None = None
        self._events: list[SourceEvent] = []
        self._failed: str | None = None
        self._stopped = threading.Event()
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="featuremap-source", daemon=True)
        self._thread.start()

    def _event(self, kind: str, detail: str) -> None:
        with self._cond:
            self._events.append(SourceEvent(kind, time.time(), detail))
            self._cond.notify_all()

    def take_events(self) -> list[SourceEvent]:
        with self._cond:
            events, self._events = self._events, []
        return events

    def _run(self) -> None:
        index, attempts = 0, 0
        while not self._stopped.is_set():
            capture = self._capture
            while capture is not None and not self._stopped.is_set():
                ok, frame = capture.read()
                if not ok:
                    break
                attempts = 0
                with self._cond:
                    if self._slot is not None:
                        self.dropped += 1
                    self._slot = (index, time.time(), frame)
                    index += 1
                    self._cond.notify_all()
            if capture is not None:
                capture.release()
                self._capture = None
            if self._stopped.is_set():
                return
            if attempts == 0:
                self._event("source lost", f"{self._spec}: no frame within the timeout, or the stream closed")
            if attempts >= self._max_reconnects:
                self._failed = (f"{self._spec}: source lost and not reconnected "
                                f"({self._max_reconnects} attempt(s); --max-reconnects)")
                self._event("gave up", self._failed)
                return
            if self._stopped.wait(min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** attempts)):
                return
            attempts += 1
            capture = self._open()
            if capture.isOpened():
                self._capture = capture
                self._event("reconnected", f"{self._spec}: attempt {attempts}")
            else:
                capture.release()

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        while True:
            with self._cond:
                while self._slot is None and self._failed is None and not self._stopped.is_set():
                    self._cond.wait(0.1)
                if self._slot is not None:
                    item, self._slot = self._slot, None
                elif self._failed is not None:
                    raise SourceError(self._failed)
                else:
                    return
            yield item

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(30)
        if self._capture is not None:
            self._capture.release()


@dataclass
class Source:
    """An opened source of frames.

    Iterating yields ``(sequence, timestamp, frame)``: the frame's index, its
    time in seconds (the position in a file, the wall clock for live
    sources) and a BGR or gray uint8 array.

    Attributes
    ----------
    spec : str
        What was opened.
    fps : float or None
        Frames per second, when known.
    frame_count : int or None
        Number of frames, when known (files, images).
    live : bool
        A camera or network stream: the server should skip stale frames
        (realtime mode) rather than queue them.
    """

    spec: str
    fps: float | None
    frame_count: int | None
    live: bool
    _frames: Iterator[tuple[int, float, np.ndarray]] = field(repr=False, default_factory=lambda: iter(()))
    _close: Callable[[], None] | None = field(repr=False, default=None)
    _reader: _LiveReader | None = field(repr=False, default=None)
    _paths: list[str] | None = field(repr=False, default=None)

    def name_of(self, sequence: int) -> str:
        """Where frame ``sequence`` came from: its image file (folders, globs), else the source as given."""
        if self._paths is not None and 0 <= sequence < len(self._paths):
            return self._paths[sequence]
        return self.spec

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        return self._frames

    @property
    def dropped(self) -> int:
        """Frames a live source delivered that were replaced by newer ones before they were taken."""
        return self._reader.dropped if self._reader is not None else 0

    def events(self) -> list[SourceEvent]:
        """What happened to a live source since the last call: lost, reconnected, gave up."""
        return self._reader.take_events() if self._reader is not None else []

    def close(self) -> None:
        if self._reader is not None:
            self._reader.stop()
        if self._close is not None:
            self._close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _images(spec: str, paths: list[str]) -> Source:
    if not paths:
        raise SourceError(f"{spec}: no images found")

    def frames() -> Iterator[tuple[int, float, np.ndarray]]:
        for index, path in enumerate(paths):
            image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if image is None:
                raise SourceError(f"{spec}: {path} is not a readable image (corrupt or unsupported)")
            if image.dtype != np.uint8:
                image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, int(image.max())))
            yield index, float(index), image

    return Source(spec=spec, fps=None, frame_count=len(paths), live=False, _frames=frames(), _paths=list(paths))


def _capture(spec: str, capture: cv2.VideoCapture, live: bool) -> Source:
    if not capture.isOpened():
        kind = "camera" if spec.isdigit() else "stream" if live else "video"
        raise SourceError(f"cannot open {kind} {spec!r}: check that it exists and OpenCV can read it")
    fps = capture.get(cv2.CAP_PROP_FPS) or None
    frames_in_file = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not live else 0
    count = frames_in_file if frames_in_file > 0 else None

    def frames() -> Iterator[tuple[int, float, np.ndarray]]:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                if count is not None and index < count:
                    raise SourceError(f"{spec}: frame {index} of {count} could not be read (corrupt file?)")
                return  # the end of a file is not an error
            position = capture.get(cv2.CAP_PROP_POS_MSEC)
            stamp = position / 1e3 if position > 0 or index == 0 else index / (fps or 1.0)
            yield index, stamp, frame
            index += 1

    return Source(spec=spec, fps=fps, frame_count=count, live=live, _frames=frames(), _close=capture.release)


def _live(spec: str, open_capture: Callable[[], cv2.VideoCapture], max_reconnects: int) -> Source:
    capture = open_capture()
    if not capture.isOpened():
        kind = "camera" if spec.isdigit() else "stream"
        raise SourceError(f"cannot open {kind} {spec!r}: check that it exists and OpenCV can read it")
    fps = capture.get(cv2.CAP_PROP_FPS) or None
    reader = _LiveReader(spec, open_capture, capture, max_reconnects=max_reconnects)
    return Source(spec=spec, fps=fps, frame_count=None, live=True, _frames=reader.frames(), _reader=reader)


def open_source(spec: str, *, timeout: float = DEFAULT_TIMEOUT, max_reconnects: int = DEFAULT_RECONNECTS) -> Source:
    """Open a source of frames by its description.

    Parameters
    ----------
    spec : str
        A camera index ("0"), an RTSP/HTTP(S) URL, an image file, a folder of
        images, a glob pattern ("frames/*.png"), or a video file.
    timeout : float
        Live sources: seconds to open, and between frames, before the source
        counts as lost.
    max_reconnects : int
        Live sources: attempts to reopen a lost source (exponential backoff
        from 0.5 s to 8 s) before iteration raises SourceError.

    Live sources (cameras, URLs) are drained on a thread of their own: the
    iteration always yields the newest frame, and ``Source.dropped`` counts
    the ones replaced before they were taken. Their timestamps are the wall
    clock when the frame was read.

    Raises
    ------
    SourceError
        When the source cannot be opened; the message names it.
    """
    spec = str(spec)
    if spec.isdigit():
        return _live(spec, lambda: cv2.VideoCapture(int(spec)), max_reconnects)
    if "://" in spec:
        milliseconds = int(timeout * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds, cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds]
        return _live(spec, lambda: cv2.VideoCapture(spec, cv2.CAP_FFMPEG, params), max_reconnects)
    path = Path(spec)
    if any(ch in spec for ch in "*?["):
        return _images(spec, sorted(glob.glob(spec)))
    if path.is_dir():
        return _images(spec, sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
    if not path.exists():
        raise SourceError(f"{spec}: no such file, folder, camera index or URL")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _images(spec, [spec])
    return _capture(spec, cv2.VideoCapture(spec), live=False)
