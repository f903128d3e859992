"""A real browser for the live view's tests and benchmark: Debian's chromium driven by Playwright.

Playwright's own browser download cannot be reached from our machines, so the
system's chromium is launched through ``executable_path`` (`.ci/run` installs
it with apt). Its fake camera plays a y4m clip that :func:`write_clip` makes
with a known object path and each frame's index drawn in a strip of blocks
(:func:`frame_index` reads it back from a frame the page sent).
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

#: Where Debian's package puts the browser.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
#: The clip's frame index: this many bits, as white or black blocks along the top.
BITS = 8
BLOCK = 16


def chromium_path() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def need_browser() -> str:
    """The browser's path; skip (fail under CI, which installs it) when chromium or playwright is missing."""
    path = chromium_path()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        reason = "the live view's tests need chromium (apt-get install chromium) and playwright (the test extra)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@dataclass(frozen=True)
class Clip:
    """A y4m clip for the fake camera: ``frames`` frames of ``size``, the object's top-left corner in
    each (``path``), the object itself (the template) and its size."""

    file: Path
    frames: int
    size: tuple[int, int]  # width, height
    path: list[tuple[int, int]]
    template: np.ndarray

    def truth(self, index: int) -> np.ndarray:
        """The object's box corners in frame ``index``, as the page draws a box (pixel edges)."""
        x, y = self.path[index % self.frames]
        height, width = self.template.shape[:2]
        left, top = x - 0.5, y - 0.5
        return np.array([[left, top], [left + width, top], [left + width, top + height], [left, top + height]])


def scene_background(width: int, height: int, seed: int = 3) -> np.ndarray:
    """A textured background: smooth noise at two scales (every window has structure, none repeats)."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8), (width, height),
                        interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 1.5)
    return cv2.addWeighted(coarse, 0.5, fine, 0.5, 0)


def object_patch(size: int = 64, seed: int = 11) -> np.ndarray:
    """The moving object: a high-contrast textured square (a checker under noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    checker = (((xx // 8) + (yy // 8)) % 2 * 180 + 40).astype(np.uint8)
    noise = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (0, 0), 2.0)
    patch = cv2.addWeighted(np.dstack([checker] * 3), 0.6, noise, 0.4, 0)
    cv2.circle(patch, (size // 3, size // 3), size // 6, (30, 200, 240), -1)
    return patch


def write_clip(folder: Path, frames: int = 40, size: tuple[int, int] = (640, 480), fps: int = 10) -> Clip:
    """Write the fake camera's clip (y4m, I420): the object moving over the background, frame indexes
    in a strip of blocks at the top-left."""
    width, height = size
    background = scene_background(width, height)
    patch = object_patch()
    side = patch.shape[0]
    path = []
    file = folder / "clip.y4m"
    with open(file, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for index in range(frames):
            phase = 2 * np.pi * index / frames
            x = int(round(width / 2 - side / 2 + (width / 2 - side - 40) * np.cos(phase)))
            y = int(round(height / 2 - side / 2 + (height / 2 - side - 50) * np.sin(phase) * 0.8 + 20))
            frame = background.copy()
            frame[y:y + side, x:x + side] = patch
            for bit in range(BITS):
                value = 255 if index >> bit & 1 else 0
                left = 8 + bit * (BLOCK + 4)
                frame[8:8 + BLOCK, left:left + BLOCK] = value
            path.append((x, y))
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return Clip(file, frames, size, path, patch)


def write_video(clip: Clip, folder: Path) -> Path:
    """The clip again as a WebM file (VP8, which chromium plays): a video file to drop on the page."""
    raw = np.fromfile(clip.file, np.uint8)
    width, height = clip.size
    path = folder / "clip.webm"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), 10.0, (width, height))
    assert writer.isOpened(), "OpenCV cannot write VP8 here"
    header = clip.file.read_bytes().index(b"\n") + 1
    size = width * height * 3 // 2
    for index in range(clip.frames):
        start = header + index * (len(b"FRAME\n") + size) + len(b"FRAME\n")
        yuv = raw[start:start + size].reshape(height * 3 // 2, width)
        writer.write(cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420))
    writer.release()
    return path


def frame_index(frame: np.ndarray) -> int:
    """The index drawn in a frame of the clip (as the page sent it: a decoded JPEG)."""
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    index = 0
    for bit in range(BITS):
        left = 8 + bit * (BLOCK + 4)
        if gray[12:8 + BLOCK - 4, left + 4:left + BLOCK - 4].mean() > 128:
            index |= 1 << bit
    return index


@contextmanager
def browser(executable: str, camera: Path | None = None):
    """A headless chromium (the fake camera playing ``camera`` when given); yields the Browser."""
    from playwright.sync_api import sync_playwright

    args = ["--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required",
            "--disable-gpu", "--disable-dev-shm-usage"]
    if camera is not None:
        args += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera}"]
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=args)
        try:
            yield launched
        finally:
            launched.close()
