"""Frame sources through OpenCV: video files, cameras, RTSP/HTTP streams, images and folders."""

from __future__ import annotations

import glob
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class SourceError(Exception):
    """A source that cannot be opened or read; the message names it."""


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

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        return self._frames

    def close(self) -> None:
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

    return Source(spec=spec, fps=None, frame_count=len(paths), live=False, _frames=frames())


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
                if count is not None and index < count and not live:
                    raise SourceError(f"{spec}: frame {index} of {count} could not be read (corrupt file?)")
                if live and index == 0:
                    raise SourceError(f"{spec}: no frame arrived")
                return
            if live:
                stamp = time.time()
            else:
                position = capture.get(cv2.CAP_PROP_POS_MSEC)
                stamp = position / 1e3 if position > 0 or index == 0 else index / (fps or 1.0)
            yield index, stamp, frame
            index += 1

    return Source(spec=spec, fps=fps, frame_count=count, live=live, _frames=frames(), _close=capture.release)


def open_source(spec: str) -> Source:
    """Open a source of frames by its description.

    Parameters
    ----------
    spec : str
        A camera index ("0"), an RTSP/HTTP(S) URL, an image file, a folder of
        images, a glob pattern ("frames/*.png"), or a video file.

    Raises
    ------
    SourceError
        When the source cannot be opened; the message names it.
    """
    spec = str(spec)
    if spec.isdigit():
        return _capture(spec, cv2.VideoCapture(int(spec)), live=True)
    if "://" in spec:
        return _capture(spec, cv2.VideoCapture(spec, cv2.CAP_FFMPEG), live=True)
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
