"""Detections with track ids: a peak that overlaps the box a template had a frame ago keeps its id.

Per template, each detection is matched to the open track whose last box it
overlaps most (intersection over union at least ``min_iou``), strongest
detection first; the rest start new tracks. A track unseen for ``max_unseen``
frames ends. Simple, greedy and deterministic: what a video overlay and a
JSON consumer need to tell "the same object again" from "another one".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from featuremap import boxes

from .client import Peak

MIN_IOU = 0.3
MAX_UNSEEN = 5


@dataclass(frozen=True)
class Detection:
    """A peak kept as a detection, with the id of its track (unique over the tracker's life)."""

    peak: Peak
    track: int


@dataclass
class _Track:
    id: int
    box: tuple[float, float, float, float]  # x, y, width, height
    unseen: int = 0


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, width, height) boxes (:func:`featuremap.boxes.iou`)."""
    return boxes.iou((a[0] + a[2] / 2.0, a[1] + a[3] / 2.0, a[2], a[3], 0.0),
                     (b[0] + b[2] / 2.0, b[1] + b[3] / 2.0, b[2], b[3], 0.0))


@dataclass
class Tracker:
    """Track ids for the detections of successive frames (see the module's docstring)."""

    min_iou: float = MIN_IOU
    max_unseen: int = MAX_UNSEEN
    _tracks: dict[str, list[_Track]] = field(default_factory=dict)
    _next: int = 1

    def update(self, peaks: list[Peak], lower_is_better: bool = False) -> list[Detection]:
        """The frame's detections, in the order of ``peaks``, each with its track id."""
        order = sorted(range(len(peaks)), key=lambda i: peaks[i].score, reverse=not lower_is_better)
        ids: dict[int, int] = {}
        seen: set[int] = set()
        for i in order:
            peak = peaks[i]
            box = (peak.x, peak.y, float(peak.width), float(peak.height))
            tracks = self._tracks.setdefault(peak.template, [])
            best, overlap = None, self.min_iou
            for track in tracks:
                if track.id not in seen and (score := iou(track.box, box)) >= overlap:
                    best, overlap = track, score
            if best is None:
                best = _Track(self._next, box)
                self._next += 1
                tracks.append(best)
            best.box, best.unseen = box, 0
            seen.add(best.id)
            ids[i] = best.id
        for template, tracks in self._tracks.items():
            for track in tracks:
                if track.id not in seen:
                    track.unseen += 1
            self._tracks[template] = [t for t in tracks if t.unseen <= self.max_unseen]
        return [Detection(peaks[i], ids[i]) for i in range(len(peaks))]
