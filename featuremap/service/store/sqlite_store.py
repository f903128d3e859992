"""Durable storage of the template bank: one SQLite file in the data directory.

WAL journal with synchronous=FULL: once ``add`` returns, the row survives a
kill -9 of the process (and a power cut, as far as the disk keeps its
promises). Each template is one row written in one transaction, so a crash
mid-write leaves either the whole template or nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import LimitExceeded, Unavailable
from .templates import ROW_FIELDS, StoredTemplate, StoreError, Version, from_row, to_row

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
    angles       TEXT NOT NULL DEFAULT '[0.0]',
    angle_range  TEXT NOT NULL DEFAULT '',
    scale_range  TEXT NOT NULL DEFAULT '',
    texture_threshold REAL NOT NULL DEFAULT 0
)
"""


def _fault(path: Path, error: Exception) -> Exception:
    """What a failed write means to a caller: a full disk is RESOURCE_EXHAUSTED, the rest UNAVAILABLE.

    Nothing was written either way: each template is one transaction.
    """
    text = str(error)
    if "full" in text or getattr(error, "errno", None) == 28:  # SQLITE_FULL, ENOSPC
        return LimitExceeded(f"the bank's disk is full ({path}): free space, then retry")
    return Unavailable(f"the bank ({path}) cannot be written: {text}; retry later")


class SQLiteStore:
    """The bank's SQLite file, a :class:`~.templates.TemplateStore`. Thread-safe: one connection behind a lock.

    Parameters
    ----------
    path : str or Path
        The database file; its directory is created if missing.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path
        self._lock = threading.Lock()
        self._version = 0  # this process is the file's one writer: its writes are the versions
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            # Banks written before templates had variants (or pose ranges): add the columns.
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(templates)")}
            for column, default in (("scales", "[1.0]"), ("angles", "[0.0]"), ("angle_range", ""),
                                    ("scale_range", "")):
                if column not in columns:
                    self._db.execute(f"ALTER TABLE templates ADD COLUMN {column} TEXT NOT NULL DEFAULT '{default}'")
            if "texture_threshold" not in columns:
                self._db.execute("ALTER TABLE templates ADD COLUMN texture_threshold REAL NOT NULL DEFAULT 0")
            self._db.execute("SELECT count(*) FROM templates").fetchone()  # reads the file: corrupt ones fail here
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"cannot open the bank {path}: {error} (is it a SQLite file, in a writable folder?)") \
                from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, template: StoredTemplate) -> tuple[StoredTemplate, Version]:
        """Insert a template; returns it with its sequence number, and the version. KeyError if the id exists."""
        row = to_row(template)
        row["mask"] = row["mask"] or None  # NULL, as banks written before the row format have it
        row["mask_dtype"] = row["mask_dtype"] or None
        with self._lock:
            try:
                cursor = self._db.execute(
                    f"INSERT INTO templates (id, {', '.join(ROW_FIELDS)}) VALUES (?{', ?' * len(ROW_FIELDS)})",
                    (template.id, *(row[name] for name in ROW_FIELDS)),
                )
            except sqlite3.IntegrityError:
                raise KeyError(template.id) from None
            except (sqlite3.Error, OSError) as error:
                raise _fault(self.path, error) from None
            self._version += 1
            return template.numbered(cursor.lastrowid), Version("", self._version)

    def delete(self, template_id: str) -> Version | None:
        """Remove a template; the version after it, None if it did not exist."""
        with self._lock:
            try:
                cursor = self._db.execute("DELETE FROM templates WHERE id = ?", (template_id,))
            except (sqlite3.Error, OSError) as error:
                raise _fault(self.path, error) from None
            if cursor.rowcount == 0:
                return None
            self._version += 1
            return Version("", self._version)

    def _select(self, where: str = "", args: tuple = ()) -> list[StoredTemplate]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, seq, {', '.join(ROW_FIELDS)} FROM templates {where} ORDER BY seq", args
            ).fetchall()
        return [from_row(tid, seq, dict(zip(ROW_FIELDS, values))) for tid, seq, *values in rows]

    def load(self) -> list[StoredTemplate]:
        """Every template, in creation order."""
        return self._select()

    def snapshot(self) -> tuple[Version, dict[str, int]]:
        """The version and every template id with its sequence number."""
        with self._lock:
            return Version("", self._version), dict(self._db.execute("SELECT id, seq FROM templates ORDER BY seq").fetchall())

    def fetch(self, ids: list[str]) -> list[StoredTemplate]:
        """These templates (those still there), in the given order."""
        if not ids:
            return []
        found = {t.id: t for t in self._select(f"WHERE id IN ({', '.join('?' * len(ids))})", tuple(ids))}
        return [found[tid] for tid in ids if tid in found]

    def watch(self, on_change: Callable[[], None]) -> None:
        """Nothing to follow: this process is the file's one writer."""
