"""Seeing results: boxes on frames, feature maps as heatmaps, video and image files."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from featuremap.wire import LOWER_IS_BETTER

from .client import FeatureMap, FrameResult, Peak


def colour_of(name: str) -> tuple[int, int, int]:
    """A stable, bright BGR colour per template name."""
    hue = zlib.crc32(name.encode()) % 180
    hsv = np.array([[[hue, 220, 255]]], np.uint8)
    blue, green, red = (int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
    return blue, green, red


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """A uint8 BGR copy of a gray, BGR or BGRA frame."""
    if frame.dtype != np.uint8:
        frame = cv2.convertScaleAbs(frame, alpha=255.0 if frame.max() <= 1.0 else 1.0)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame.copy()


def draw_peaks(frame: np.ndarray, peaks: Iterable[Peak]) -> np.ndarray:
    """The frame (as BGR) with a box, the template's name and the score for each peak."""
    canvas = as_bgr(frame)
    for peak in peaks:
        colour = colour_of(peak.template)
        x, y = int(round(peak.x)), int(round(peak.y))
        cv2.rectangle(canvas, (x, y), (x + peak.width - 1, y + peak.height - 1), colour, 2)
        label = f"{peak.template.split('/')[-1]} {peak.score:.2f}"
        cv2.putText(canvas, label, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return canvas


def heatmap(score_map: np.ndarray, method: str = "ccoeff_normed") -> np.ndarray:
    """A feature map as a BGR colour image (hot = good match, for every method)."""
    values = -score_map if method in LOWER_IS_BETTER else score_map
    low, high = float(values.min()), float(values.max())
    scaled = np.zeros(values.shape, np.uint8) if high <= low else \
        ((values - low) * (255.0 / (high - low))).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)


def heatmap_over(frame: np.ndarray, score_map: np.ndarray, *, origin: tuple[int, int] = (0, 0), stride: int = 1,
                 template_size: tuple[int, int] = (0, 0), method: str = "ccoeff_normed",
                 alpha: float = 0.5) -> np.ndarray:
    """The heatmap blended over the frame, each score drawn at its window's centre.

    ``origin`` is the frame position (x, y) of map pixel (0, 0)'s window,
    ``stride`` the frame pixels between neighbouring map pixels (each score
    then covers a stride x stride block) and ``template_size`` the window's
    (width, height): a valid map is smaller than the frame and sits half a
    template in from the top-left corner. A :class:`FeatureMap` carries its
    origin and stride: see :func:`result_heatmap`.
    """
    canvas = as_bgr(frame)
    colours = heatmap(score_map, method)
    if stride > 1:
        colours = cv2.resize(colours, (colours.shape[1] * stride, colours.shape[0] * stride),
                             interpolation=cv2.INTER_NEAREST)
    x0 = origin[0] + template_size[0] // 2 - stride // 2
    y0 = origin[1] + template_size[1] // 2 - stride // 2
    height, width = canvas.shape[:2]
    # The part of the map that lands inside the frame.
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(width, x0 + colours.shape[1]), min(height, y0 + colours.shape[0])
    if fx1 > fx0 and fy1 > fy0:
        patch = colours[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        canvas[fy0:fy1, fx0:fx1] = cv2.addWeighted(canvas[fy0:fy1, fx0:fx1], 1 - alpha, patch, alpha, 0)
    return canvas


def map_heatmap(frame: np.ndarray, feature_map: FeatureMap, peaks: Iterable[Peak] = (),
                method: str = "ccoeff_normed", alpha: float = 0.5) -> np.ndarray:
    """A :class:`FeatureMap` over its frame, placed by its origin and stride.

    The window size comes from the template's peak among ``peaks`` (none: the
    map is drawn from the windows' corners).
    """
    box = next((p for p in peaks if p.template == feature_map.template), None)
    return heatmap_over(frame, feature_map.scores, origin=feature_map.origin, stride=feature_map.stride,
                        template_size=(box.width, box.height) if box else (0, 0), method=method, alpha=alpha)


def result_heatmap(frame: np.ndarray, result: FrameResult, method: str = "ccoeff_normed") -> np.ndarray | None:
    """The first template's map of a result over its frame; None when the result carries no maps."""
    if not result.maps:
        return None
    return map_heatmap(frame, next(iter(result.maps.values())), result.peaks, method)


def beside(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two images side by side (the right one resized to the left one's height)."""
    left, right = as_bgr(left), as_bgr(right)
    if right.shape[0] != left.shape[0]:
        scale = left.shape[0] / right.shape[0]
        right = cv2.resize(right, (max(1, int(right.shape[1] * scale)), left.shape[0]))
    return np.hstack([left, right])


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an image file; raises OSError naming the path if OpenCV cannot."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        written = cv2.imwrite(str(path), image)
    except cv2.error:  # an extension OpenCV does not know
        written = False
    if not written:
        raise OSError(f"cannot write image {path}: check the folder and the extension (.png, .jpg)")


class VideoWriter:
    """A video file written frame by frame; opened at the first frame's size.

    Parameters
    ----------
    path : str or Path
        ``.mp4`` (mp4v) or ``.avi`` (MJPG).
    fps : float
    """

    def __init__(self, path: str | Path, fps: float = 25.0) -> None:
        self.path = Path(path)
        self.fps = fps or 25.0
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        frame = as_bgr(frame)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter.fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (frame.shape[1], frame.shape[0]))
            if not self._writer.isOpened():
                raise OSError(f"cannot write video {self.path}: use .mp4 or .avi in a writable folder")
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
