"""Durable storage of the template bank: one SQLite file in the data directory.

WAL journal with synchronous=FULL: once ``add`` returns, the row survives a
kill -9 of the process (and a power cut, as far as the disk keeps its
promises). Each template is one row written in one transaction, so a crash
mid-write leaves either the whole template or nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    labels       TEXT NOT NULL,
    pixels       BLOB NOT NULL,
    shape        TEXT NOT NULL,
    dtype        TEXT NOT NULL,
    mask         BLOB,
    mask_dtype   TEXT,
    create_time  REAL NOT NULL,
    etag         TEXT NOT NULL,
    scales       TEXT NOT NULL DEFAULT '[1.0]',
    angles       TEXT NOT NULL DEFAULT '[0.0]'
)
"""


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


def _array(blob: bytes, shape: str, dtype: str) -> np.ndarray:
    return np.frombuffer(blob, np.dtype(dtype)).reshape(json.loads(shape))


class Store:
    """The bank's SQLite file. Thread-safe: one connection behind a lock.

    Parameters
    ----------
    path : str or Path
        The database file; its directory is created if missing.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        # Banks written before templates had variants: add the columns.
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(templates)")}
        for column, default in (("scales", "[1.0]"), ("angles", "[0.0]")):
            if column not in columns:
                self._db.execute(f"ALTER TABLE templates ADD COLUMN {column} TEXT NOT NULL DEFAULT '{default}'")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, template: StoredTemplate) -> StoredTemplate:
        """Insert a template; returns it with its sequence number. Raises KeyError if the id exists."""
        mask = template.mask
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT INTO templates (id, display_name, labels, pixels, shape, dtype, mask, mask_dtype,"
                    " create_time, etag, scales, angles) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        template.id,
                        template.display_name,
                        json.dumps(template.labels, sort_keys=True),
                        np.ascontiguousarray(template.image).tobytes(),
                        json.dumps(list(template.image.shape)),
                        template.image.dtype.str,
                        None if mask is None else np.ascontiguousarray(mask).tobytes(),
                        None if mask is None else mask.dtype.str,
                        template.create_time,
                        template.etag,
                        json.dumps(list(template.scales)),
                        json.dumps(list(template.angles)),
                    ),
                )
            except sqlite3.IntegrityError:
                raise KeyError(template.id) from None
        return StoredTemplate(**{**template.__dict__, "seq": cursor.lastrowid})

    def delete(self, template_id: str) -> bool:
        """Remove a template; False if it did not exist."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM templates WHERE id = ?", (template_id,))
        return cursor.rowcount > 0

    def load(self) -> list[StoredTemplate]:
        """Every template, in creation order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, display_name, labels, pixels, shape, dtype, mask, mask_dtype, create_time, etag,"
                " scales, angles FROM templates ORDER BY seq"
            ).fetchall()
        templates = []
        for seq, tid, name, labels, pixels, shape, dtype, mask, mask_dtype, created, etag, scales, angles in rows:
            image = _array(pixels, shape, dtype)
            weights = None if mask is None else _array(mask, json.dumps(list(image.shape[:2])), mask_dtype)
            templates.append(
                StoredTemplate(
                    id=tid, image=image, mask=weights, display_name=name, labels=json.loads(labels),
                    create_time=created, etag=etag, seq=seq,
                    scales=tuple(json.loads(scales)), angles=tuple(json.loads(angles)),
                )
            )
        return templates
