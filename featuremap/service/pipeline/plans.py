"""What a frame is matched with and what comes of it: a config's options and templates, resolved
once (``Plan``), a stream's last poses, and one frame's peaks and placed maps."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from featuremap.wire import Peak

from ..engine import Pose, map_origin
from ..engine.texture import DEFAULTS as TEXTURE_DEFAULTS
from ..engine.texture import for_frame
from ..store.templates import StoredTemplate


@dataclass(frozen=True)
class MatchOptions:
    """How to match and what to report: engine options, peak options, the maps' encoding.

    One field per row of :data:`featuremap.options.OPTIONS` but ``templates`` (the plan holds those), of
    the same name; ``frames.match_options`` fills them from a config by the table.
    """

    method: str = "ccoeff_normed"
    padding: str = "valid"
    border: str = "constant"
    border_value: float = 0.0
    stride: int = 1
    data_range: float | None = None
    top_k: int = 1
    threshold: float | None = None
    min_distance: int = 0
    subpixel: bool = False
    # Raise the threshold per template to its texture's (ccoeff_normed; see raised_threshold).
    template_thresholds: bool = False
    maps: str | None = None  # the maps' encoding, by name; None sends no maps
    realtime: bool = False
    # Pose templates only; None: the engine's default (PoseSearch.search's).
    min_visible: float | None = None
    max_overlap: float | None = None
    candidates: int | None = None

    def engine_options(self) -> dict[str, Any]:
        """The keyword arguments of the engine's Matcher."""
        return dict(method=self.method, padding=self.padding, border=self.border, border_value=self.border_value,
                    stride=self.stride, data_range=self.data_range)

    def texture_decides(self) -> bool:
        """Whether the config asks for each template's texture to decide (a threshold, with
        ``template_thresholds``, under a method the texture rule is calibrated for)."""
        return self.threshold is not None and self.template_thresholds and self.method in TEXTURE_DEFAULTS

    def raised_threshold(self, template: StoredTemplate, windows: int) -> float | None:
        """The threshold ``template``'s peaks must reach in a frame of about ``windows`` positions: the
        config's, raised to the template's texture threshold (made stricter for frames larger than the
        rule was fitted on: ``engine.texture.for_frame``) where the config asks for it (ccoeff_normed
        only; None: no threshold)."""
        if not self.texture_decides():
            return self.threshold
        if template.texture_threshold <= TEXTURE_DEFAULTS[self.method]:
            return self.threshold  # a textured template: the config's threshold as it is, even under 0.7
        return max(self.threshold, for_frame(template.texture_threshold, windows))

    def pose_options(self) -> dict[str, Any]:
        """The keyword arguments of PoseSearch.search and .track the config sets (the rest are the engine's)."""
        given = dict(min_visible=self.min_visible, max_overlap=self.max_overlap, candidates=self.candidates)
        return {name: value for name, value in given.items() if value is not None}


@dataclass(frozen=True)
class Plan:
    """A config resolved once, when it arrives: its templates (a snapshot of the bank) and options."""

    templates: tuple[StoredTemplate, ...]
    whole_bank: bool
    options: MatchOptions


class PoseMemory:
    """A stream's last poses per template version: the next frame searches near them first. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._poses: dict[tuple[str, str], list[Pose]] = {}

    def get(self, template: StoredTemplate) -> list[Pose] | None:
        with self._lock:
            return self._poses.get((template.id, template.etag))

    def put(self, template: StoredTemplate, poses: list[Pose]) -> None:
        with self._lock:
            self._poses[(template.id, template.etag)] = poses


@dataclass(frozen=True)
class TemplateMap:
    """One template's map, placed: map pixel (i, j) is the window at (origin_x + j * stride, origin_y + i * stride).

    The window is the template drawn at ``angle`` (degrees, counter-clockwise
    as displayed) and ``scale``: its variant's canvas, ``window`` (width,
    height) frame pixels.
    """

    template: str
    scores: np.ndarray
    origin_x: int
    origin_y: int
    angle: float = 0.0
    scale: float = 1.0
    window: tuple[int, int] = (0, 0)

    @classmethod
    def placed(cls, template: str, scores: np.ndarray, padding: str, image: np.ndarray, scale: float = 1.0,
               angle: float = 0.0) -> TemplateMap:
        """The map of the variant ``image`` (HxWxC, drawn at ``scale`` and ``angle``), placed by ``padding``."""
        height, width = image.shape[:2]
        return cls(template, scores, *map_origin(padding, height, width), angle=angle, scale=scale,
                   window=(width, height))


@dataclass(frozen=True)
class Computed:
    """One frame's peaks and maps."""

    peaks: list[Peak]
    maps: list[TemplateMap]
    compute_ms: float
