"""Seeing results: boxes on frames, feature maps as heatmaps, video and image files."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from featuremap.wire import LOWER_IS_BETTER

from .client import FeatureMap, FrameResult, Peak


#: Ten colours told apart at a glance (Tableau 10), BGR.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23),
)


class Palette:
    """A colour per template: the palette's colours in the order templates are first drawn.

    So two templates never share a colour until there are more than ten;
    keep one Palette for a whole video so that each keeps its colour.
    """

    def __init__(self) -> None:
        self._given: dict[str, tuple[int, int, int]] = {}

    def __call__(self, template: str) -> tuple[int, int, int]:
        if template not in self._given:
            self._given[template] = PALETTE[len(self._given) % len(PALETTE)]
        return self._given[template]


def colour_of(name: str) -> tuple[int, int, int]:
    """A stable colour per template name, the same in every process (a palette colour by hash)."""
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """A uint8 BGR copy of a gray, BGR or BGRA frame."""
    if frame.dtype != np.uint8:
        frame = cv2.convertScaleAbs(frame, alpha=255.0 if frame.max() <= 1.0 else 1.0)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame.copy()


def draw_peaks(frame: np.ndarray, peaks: Iterable[Peak], *, tracks: Iterable[int | None] | None = None,
               palette: Palette | None = None) -> np.ndarray:
    """The frame (as BGR) with a box and a label (template, track id, score) for each peak.

    Lines and text scale with the frame; labels sit on a filled background
    in the template's colour, inside the frame.
    """
    canvas = as_bgr(frame)
    palette = palette or Palette()
    side = min(canvas.shape[:2])
    line = max(2, round(side / 300))
    scale = max(0.4, side / 900)
    weight = max(1, round(side / 500))
    peaks = list(peaks)
    ids = list(tracks) if tracks is not None else [None] * len(peaks)
    placed: list[tuple[int, int, int, int]] = []  # labels drawn so far: (left, top, right, bottom)
    for peak, track in zip(peaks, ids, strict=True):
        colour = palette(peak.template)
        x, y = int(round(peak.x)), int(round(peak.y))
        if peak.visible < 1.0:  # a part clipped at the frame's edge: its whole box, dashed
            corners = cv2.boxPoints(((peak.cx, peak.cy), (peak.width, peak.height), -peak.angle))
            dashed_polygon(canvas, corners, colour, line)
        elif peak.angle % 360 == 0:
            cv2.rectangle(canvas, (x, y), (x + peak.width - 1, y + peak.height - 1), colour, line)
        else:  # the box turned by angle (counter-clockwise as displayed) about its centre
            corners = cv2.boxPoints(((peak.cx, peak.cy), (peak.width, peak.height), -peak.angle))
            cv2.polylines(canvas, [np.round(corners).astype(np.int32)], True, colour, line, cv2.LINE_AA)
        name = peak.template.split("/")[-1]
        label = f"{name} #{track} {peak.score:.2f}" if track is not None else f"{name} {peak.score:.2f}"
        (width, height), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
        left, top = place_label((x, y, peak.width, peak.height), (width + 4, height + base + 4), canvas.shape[:2],
                                placed, gap=2 * line)
        placed.append((left, top, left + width + 4, top + height + base + 4))
        cv2.rectangle(canvas, (left, top), (left + width + 4, top + height + base + 4), colour, cv2.FILLED)
        ink = (0, 0, 0) if sum(c * w for c, w in zip(colour, (0.114, 0.587, 0.299))) > 140 else (255, 255, 255)
        cv2.putText(canvas, label, (left + 2, top + height + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, weight,
                    cv2.LINE_AA)
    return canvas


def dashed_polygon(canvas: np.ndarray, corners: np.ndarray, colour: tuple[int, int, int], line: int) -> None:
    """A closed polygon (corners, N x 2 in frame pixels) drawn in dashes: dashes and gaps of 4 line widths
    (at least 8 px: a thick line's round caps eat into the gaps), each edge starting with a dash so that the
    corners show."""
    dash = gap = max(8.0, 4.0 * line)
    points = np.asarray(corners, np.float64)
    for start, end in zip(points, np.roll(points, -1, axis=0)):
        length = float(np.hypot(*(end - start)))
        if length == 0.0:
            continue
        step = (end - start) / length
        at = 0.0
        while at < length:
            a, b = start + step * at, start + step * min(at + dash, length)
            cv2.line(canvas, (round(a[0]), round(a[1])), (round(b[0]), round(b[1])), colour, line, cv2.LINE_AA)
            at += dash + gap


def place_label(box: tuple[int, int, int, int], size: tuple[int, int], frame: tuple[int, int],
                placed: list[tuple[int, int, int, int]], gap: int = 2) -> tuple[int, int]:
    """Where a label of ``size`` (w, h) goes for a box (x, y, w, h): (left, top), inside the frame.

    Above the box, else below it, else stepped down beside it, whichever first
    overlaps no label already ``placed`` (rectangles left, top, right, bottom);
    when every place is taken, above the box.
    """
    x, y, bw, bh = box
    width, height = size
    rows, cols = frame
    left = min(max(0, x), max(0, cols - width))

    def clear(top: int) -> bool:
        return all(left + width <= a or b >= top + height or left >= c or top >= d for a, b, c, d in placed)

    candidates = [y - height - gap, y + bh + gap] + [y + k * height for k in range(0, max(1, bh // height) + 1)]
    candidates += [y + bh + gap + k * height for k in range(1, 4)] + [y - height - gap - k * height for k in range(1, 4)]
    inside = [min(max(0, top), max(0, rows - height)) for top in candidates]
    return left, next((top for top in inside if clear(top)), inside[0])


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


def with_legend(image: np.ndarray, score_map: np.ndarray, title: str, method: str = "ccoeff_normed") -> np.ndarray:
    """``image`` with a colour bar at its right (the map's best score at the top, its worst at the
    bottom, as the heatmap's colours run) and ``title`` (the template's name, the method) above it."""
    canvas = as_bgr(image)
    rows = canvas.shape[0]
    bar_width = max(12, rows // 30)
    margin = max(40, rows // 8)
    ramp = np.linspace(255, 0, rows).astype(np.uint8)[:, None].repeat(bar_width, axis=1)
    bar = cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)
    panel = np.full((rows, bar_width + margin + 4, 3), 32, np.uint8)
    panel[:, 2:2 + bar_width] = bar
    values = score_map[np.isfinite(score_map)]
    best, worst = (float(values.min()), float(values.max())) if method in LOWER_IS_BETTER else \
        (float(values.max()), float(values.min()))
    scale = max(0.35, rows / 1200)
    for text, y in ((f"{best:.3g}", int(14 * scale / 0.35)), (f"{worst:.3g}", rows - 4)):
        cv2.putText(panel, text, (bar_width + 5, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    canvas = np.hstack([canvas, panel])
    (tw, th), base = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale * 1.2, 1)
    cv2.rectangle(canvas, (0, 0), (min(canvas.shape[1] - 1, tw + 8), th + base + 8), (32, 32, 32), cv2.FILLED)
    cv2.putText(canvas, title, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale * 1.2, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def map_heatmap(frame: np.ndarray, feature_map: FeatureMap, peaks: Iterable[Peak] = (),
                method: str = "ccoeff_normed", alpha: float = 0.5, legend: bool = True) -> np.ndarray:
    """A :class:`FeatureMap` over its frame, placed by its origin and stride, with its legend.

    Parameters
    ----------
    frame : numpy.ndarray
        The frame the map was computed on.
    feature_map : FeatureMap
        Its scores are the template's drawn at the map's ``angle`` and
        ``template_scale`` (for a pose template, its best pose's: the heat at
        the pose is about the pose's own score), each drawn at its window's centre.
        The window's size is the map's own (``window_width`` x
        ``window_height``); from a server that does not send it, the
        template's peak among ``peaks``, unscaled, as such a server's maps are
        the unturned template's (no peak: the map is drawn from the windows'
        corners).
    peaks : iterable of Peak
        The result's peaks. A pose (a peak turned, scaled or clipped at the
        edge) is drawn over the heat in its own frame: its turned box and its
        x axis, from its centre, so that the heat is read against the pose.
        The title gives the pose's angle and scale, and the map's when they
        differ.
    method : str
        The method, for which end of the scores is best.
    alpha : float
        The heat's weight over the frame.
    legend : bool
        A colour bar with the map's best and worst scores, and the template's
        name (see :func:`with_legend`).

    Returns
    -------
    numpy.ndarray
        BGR, wider than the frame by the legend's panel when ``legend``.
    """
    box = next((p for p in peaks if p.template == feature_map.template), None)
    size = feature_map.window
    if not all(size):
        # A server before the window's size: its maps are the unscaled, unturned template's, whose
        # windows are the template's own size, not the pose's box.
        size = (round(box.width / (box.scale or 1.0)), round(box.height / (box.scale or 1.0))) if box else (0, 0)
    image = heatmap_over(frame, feature_map.scores, origin=feature_map.origin, stride=feature_map.stride,
                         template_size=size, method=method, alpha=alpha)
    pose = box if box is not None and (box.angle % 360 != 0 or box.scale != 1.0 or box.visible < 1.0) else None
    if pose is not None:
        _draw_pose_frame(image, pose)
    if not legend:
        return image
    return with_legend(image, feature_map.scores, _map_title(feature_map, pose, method), method)


def _map_title(feature_map: FeatureMap, pose: Peak | None, method: str) -> str:
    """The heatmap's title: the template's name, the method, and the angle and scale of the pose and of the map."""
    name = feature_map.template.split("/")[-1]
    drawn = f"{feature_map.angle:.1f} deg, x{feature_map.template_scale:.2f}"
    if pose is None:
        return f"{name} ({method}; map at {drawn})" if feature_map.turned else f"{name} ({method})"
    at = f"{pose.angle:.1f} deg, x{pose.scale:.2f}"
    # As the wire rounds them (float32): the map of the pose reads as the pose's own angle and scale.
    if abs((feature_map.angle - pose.angle + 180) % 360 - 180) < 0.05 and \
            abs(feature_map.template_scale - pose.scale) < 0.005:
        return f"{name} ({method}; pose and map at {at})"
    return f"{name} ({method}; pose at {at}, map at {drawn})"


def _draw_pose_frame(canvas: np.ndarray, pose: Peak) -> None:
    """The pose's frame on ``canvas``, in place: its turned box and its x axis from the centre (white)."""
    line = max(1, round(min(canvas.shape[:2]) / 400))
    corners = cv2.boxPoints(((pose.cx, pose.cy), (pose.width, pose.height), -pose.angle))
    cv2.polylines(canvas, [np.round(corners).astype(np.int32)], True, (255, 255, 255), line, cv2.LINE_AA)
    turn = np.radians(pose.angle)  # counter-clockwise as displayed: y grows downwards
    tip = (pose.cx + 0.5 * pose.width * np.cos(turn), pose.cy - 0.5 * pose.width * np.sin(turn))
    cv2.arrowedLine(canvas, (round(pose.cx), round(pose.cy)), (round(tip[0]), round(tip[1])), (255, 255, 255), line,
                    cv2.LINE_AA, tipLength=0.2)


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

    ``.mp4`` is H.264 (browsers play it) when the system has ``ffmpeg``
    with libx264: frames are piped to it. Without it, ``.mp4`` falls back to
    OpenCV's MPEG-4 Part 2 (``mp4v``) with a one-line note on stderr.
    ``.avi`` is MJPG.

    Parameters
    ----------
    path : str or Path
    fps : float
    """

    def __init__(self, path: str | Path, fps: float = 25.0) -> None:
        self.path = Path(path)
        self.fps = fps or 25.0
        self._writer: cv2.VideoWriter | None = None
        self._ffmpeg: subprocess.Popen[bytes] | None = None
        self.frames = 0
        self.codec = ""

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix.lower() == ".mp4" and _has_x264():
            self._ffmpeg = subprocess.Popen(
                ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
                 "-r", f"{self.fps:g}", "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                 "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-movflags", "+faststart", str(self.path)],
                # Its own session: the Ctrl-C meant for us must not stop it mid-file.
                stdin=subprocess.PIPE, start_new_session=True)
            self.codec = "h264"
            return
        if self.path.suffix.lower() == ".mp4":
            sys.stderr.write(f"note: no ffmpeg with libx264 here: {self.path} is MPEG-4 Part 2 (mp4v), which browsers "
                             "do not play; install ffmpeg for H.264\n")
        fourcc = cv2.VideoWriter.fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
        if not self._writer.isOpened():
            raise OSError(f"cannot write video {self.path}: use .mp4 or .avi in a writable folder")
        self.codec = "mjpeg" if self.path.suffix.lower() == ".avi" else "mpeg4"

    def write(self, frame: np.ndarray) -> None:
        frame = as_bgr(frame)
        if self._writer is None and self._ffmpeg is None:
            self._open(frame.shape[1], frame.shape[0])
        if self._ffmpeg is not None:
            assert self._ffmpeg.stdin is not None
            try:
                self._ffmpeg.stdin.write(np.ascontiguousarray(frame).tobytes())
            except BrokenPipeError:
                raise OSError(f"ffmpeg stopped writing {self.path}") from None
        else:
            assert self._writer is not None
            self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self._ffmpeg is not None:
            assert self._ffmpeg.stdin is not None
            self._ffmpeg.stdin.close()
            if self._ffmpeg.wait() != 0:
                raise OSError(f"ffmpeg could not write {self.path}")
            self._ffmpeg = None
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.cache
def _has_x264() -> bool:
    """Whether the system's ffmpeg can encode H.264."""
    if shutil.which("ffmpeg") is None:
        return False
    try:
        encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "libx264" in encoders.stdout
