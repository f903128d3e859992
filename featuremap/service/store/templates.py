"""What the bank keeps of a template, the contract every store meets, and the one row format.

A store (SQLite in the data directory, or Redis shared by replicas) keeps
each template as one row of named fields: :func:`to_row` and :func:`from_row`
are the only (de)serialisation, so every store reads what every other store
writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np


class StoreError(RuntimeError):
    """A store that cannot be opened (start-up); the message names it and says what to check."""


@dataclass(frozen=True)
class Version:
    """Where a store's history stands: writes count up ``number`` within an ``epoch``.

    The epoch changes when the store starts over (a Redis that lost its
    data): numbers from another epoch do not compare.
    """

    epoch: str
    number: int

    def covers(self, other: Version) -> bool:
        """Whether a snapshot at this version already holds the write or snapshot at ``other``."""
        return self.epoch == other.epoch and self.number >= other.number


@dataclass(frozen=True)
class StoredTemplate:
    """One template as the bank keeps it: pixels, optional mask and metadata."""

    id: str
    image: np.ndarray  # HxWxC, uint8 or float32
    mask: np.ndarray | None  # HxW, uint8 or float32
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    create_time: float = 0.0
    etag: str = ""
    seq: int = 0
    scales: tuple[float, ...] = (1.0,)
    angles: tuple[float, ...] = (0.0,)
    # Pose search: found at any angle and scale in these ranges (None: not a pose template).
    angle_range: tuple[float, float] | None = None
    scale_range: tuple[float, float] | None = None
    # The least ccoeff_normed score at which it counts as found under the default decision, from its
    # texture (engine.texture; 0.0: stored before templates were calibrated, the fixed threshold applies).
    texture_threshold: float = 0.0

    @property
    def posed(self) -> bool:
        """Whether the template is found by pose search (it has an angle or a scale range)."""
        return self.angle_range is not None or self.scale_range is not None

    def numbered(self, seq: int) -> StoredTemplate:
        """This template with the sequence number its store gave it."""
        return replace(self, seq=seq)


#: The fields of a row, in the SQLite table's column order.
ROW_FIELDS = ("display_name", "labels", "pixels", "shape", "dtype", "mask", "mask_dtype", "create_time", "etag",
              "scales", "angles", "angle_range", "scale_range", "texture_threshold")


def to_row(template: StoredTemplate) -> dict[str, str | bytes | float]:
    """A template as a row: text, bytes and numbers only (no id, no sequence: the store keys by those)."""
    mask = template.mask
    return {
        "display_name": template.display_name,
        "labels": json.dumps(template.labels, sort_keys=True),
        "pixels": np.ascontiguousarray(template.image).tobytes(),
        "shape": json.dumps(list(template.image.shape)),
        "dtype": template.image.dtype.str,
        "mask": b"" if mask is None else np.ascontiguousarray(mask).tobytes(),
        "mask_dtype": "" if mask is None else mask.dtype.str,
        "create_time": template.create_time,
        "etag": template.etag,
        "scales": json.dumps(list(template.scales)),
        "angles": json.dumps(list(template.angles)),
        "angle_range": "" if template.angle_range is None else json.dumps(list(template.angle_range)),
        "scale_range": "" if template.scale_range is None else json.dumps(list(template.scale_range)),
        "texture_threshold": template.texture_threshold,
    }


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def from_row(template_id: str, seq: int, row: Mapping[str, str | bytes | float | None]) -> StoredTemplate:
    """The template a row holds (rows written before templates had scales, angles or ranges read as the identity;
    before they had a texture threshold, as 0: none)."""

    def array(blob, shape: list[int], dtype) -> np.ndarray:
        return np.frombuffer(blob, np.dtype(_text(dtype))).reshape(shape)

    shape = json.loads(row["shape"])  # type: ignore[arg-type]
    mask = row.get("mask")
    return StoredTemplate(
        id=template_id,
        image=array(row["pixels"], shape, row["dtype"]),
        mask=array(mask, shape[:2], row["mask_dtype"]) if mask else None,
        display_name=_text(row["display_name"]),  # type: ignore[arg-type]
        labels=json.loads(row["labels"]),  # type: ignore[arg-type]
        create_time=float(row["create_time"]),  # type: ignore[arg-type]
        etag=_text(row["etag"]),  # type: ignore[arg-type]
        seq=seq,
        scales=tuple(json.loads(row.get("scales") or "[1.0]")),  # type: ignore[arg-type]
        angles=tuple(json.loads(row.get("angles") or "[0.0]")),  # type: ignore[arg-type]
        angle_range=_range(row.get("angle_range")),
        scale_range=_range(row.get("scale_range")),
        texture_threshold=float(row.get("texture_threshold") or 0.0),  # type: ignore[arg-type]
    )


def _range(value) -> tuple[float, float] | None:
    """A stored range: JSON [low, high], or empty for none."""
    if not value:
        return None
    low, high = json.loads(_text(value))
    return float(low), float(high)


class TemplateStore(Protocol):
    """Where the bank's templates live. Implemented by the SQLite and the Redis store.

    Every method is safe to call from many threads. ``add`` returns only once
    the template is durable; a crash mid-write leaves the whole template or
    nothing. Failures a caller can meet are service errors: UNAVAILABLE
    (storage unreachable), RESOURCE_EXHAUSTED (disk full).
    """

    def add(self, template: StoredTemplate) -> tuple[StoredTemplate, Version]:
        """Store a new template; returns it with its sequence number, and the store's version after the write.

        Raises KeyError if the id exists.
        """
        ...

    def delete(self, template_id: str) -> Version | None:
        """Remove a template; returns the store's version after the write, None if it did not exist."""
        ...

    def load(self) -> list[StoredTemplate]:
        """Every template, in creation order."""
        ...

    def snapshot(self) -> tuple[Version, dict[str, int]]:
        """The store's version and every template id with its sequence number, read together.

        Versions grow with every write, so a snapshot at version v holds
        every write numbered v or less and none after.
        """
        ...

    def fetch(self, ids: list[str]) -> list[StoredTemplate]:
        """These templates (those still there), in the given order."""
        ...

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` whenever someone else changes the store (never, for a store only we write)."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...
