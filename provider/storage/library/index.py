"""A local index of one tenant's image records, for listing and filtering without reading every record.

The records in the artifact store are the truth; this is a SQLite cache of them that any process (the UI
plugin in each api-server, the CLI) keeps in its own folder (``[invokeai] library_index_dir``) and brings up to
date from one listing of the record keys with their versions (ETags): only new or changed records are read,
in parallel, and records gone from the store leave the index. A missing or broken index file is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from invokeai_provider.storage.library.images import ImageLibrary

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    image_name TEXT PRIMARY KEY, version TEXT NOT NULL, created_at TEXT NOT NULL, board_id TEXT,
    starred INTEGER NOT NULL, dag_id TEXT, run_id TEXT, image_category TEXT NOT NULL,
    is_intermediate INTEGER NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS images_created ON images (created_at DESC, image_name);
CREATE INDEX IF NOT EXISTS images_board ON images (board_id, created_at DESC);
CREATE INDEX IF NOT EXISTS images_run ON images (dag_id, run_id, created_at DESC);
"""
log = logging.getLogger(__name__)
UNCATEGORIZED = "none"  # InvokeAI's board id for images on no board


@dataclass(frozen=True)
class ImageQuery:
    """Which images, newest first. ``board_id`` "none": images on no board; ``categories`` None: every category
    (InvokeAI's gallery shows ``general``, its assets tab the others); intermediates only when asked for."""

    board_id: Optional[str] = None
    dag_id: Optional[str] = None
    run_id: Optional[str] = None
    starred: Optional[bool] = None
    categories: Optional[tuple[str, ...]] = None
    include_intermediate: bool = False
    since: Optional[str] = None  # ISO date or time: created at or after
    until: Optional[str] = None  # created before


@dataclass
class ImagePage:
    records: list[dict[str, Any]]
    total: int
    offset: int
    limit: int


class ImageIndex:
    """The index of one tenant's library; thread-safe, one SQLite file per artifact root and tenant."""

    def __init__(self, library: ImageLibrary, folder: Optional[Path] = None, *, max_age_seconds: float = 2.0,
                 wait_seconds: float = 1.5, readers: int = 16) -> None:
        if folder is None:
            from invokeai_provider.config import settings

            folder = settings().library_index_dir
        folder.mkdir(parents=True, exist_ok=True)
        root = hashlib.sha256(library.backend.uri(library.prefix).encode()).hexdigest()[:16]
        self.path = folder / f"{root}-{library.tenant}.sqlite"
        self.library = library
        self.max_age_seconds = max_age_seconds
        self.wait_seconds = wait_seconds  # how long a listing waits for a stale index's sync before answering
        self.readers = readers
        self._lock = threading.Lock()  # the database
        self._sync_lock = threading.Lock()  # one sync at a time
        self._synced_at = 0.0  # time.monotonic() of the last sync's start; 0: sync before the next listing
        self._generation = 0  # counts invalidations
        self._background: Optional[threading.Thread] = None  # the sync a stale listing started
        self._background_lock = threading.Lock()
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        for attempt in range(2):
            try:
                db = sqlite3.connect(self.path, check_same_thread=False)
                db.executescript(_SCHEMA)
                return db
            except sqlite3.DatabaseError:  # not a database (a torn file): it is only a cache, start again
                if attempt:
                    raise
                self.path.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def sync(self, force: bool = False) -> dict[str, int]:
        """Brings the index up to date with the store (at most every ``max_age_seconds`` unless ``force``);
        how many records it added or changed, and removed. Queries go on meanwhile: only the writes hold the
        database."""
        with self._sync_lock:
            if not force and self._synced_at and time.monotonic() - self._synced_at < self.max_age_seconds:
                return {"changed": 0, "removed": 0}
            started, generation = time.monotonic(), self._generation
            listed = dict(self.library.record_versions())
            with self._lock:
                known = dict(self._db.execute("SELECT image_name, version FROM images"))
            changed = [name for name, version in listed.items() if known.get(name) != version]
            removed = [name for name in known if name not in listed]
            with ThreadPoolExecutor(max_workers=self.readers) as pool:
                records = list(pool.map(self.library.find, changed))
            rows = [_row(record, listed[name]) for name, record in zip(changed, records) if record is not None]
            with self._lock, self._db:
                self._db.executemany("DELETE FROM images WHERE image_name = ?", [(n,) for n in removed])
                self._db.executemany("INSERT OR REPLACE INTO images VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            if generation == self._generation:  # not invalidated meanwhile: a change may have come after the listing
                self._synced_at = started
            return {"changed": len(rows), "removed": len(removed)}

    def invalidate(self) -> None:
        """The next listing syncs first, whatever its age: this process just changed the store."""
        self._generation += 1
        self._synced_at = 0.0

    def refresh(self) -> None:
        """Before a listing: a never-synced or invalidated index (or one with ``max_age_seconds`` 0) syncs now. A
        stale one starts a sync and waits for it at most ``wait_seconds``: a small tenant's listing is fresh, and a
        large tenant's gallery page does not wait for a listing of its whole store (it answers with what it has;
        the sync goes on and the next listing has it)."""
        if not self._synced_at or self.max_age_seconds <= 0:
            self.sync(force=True)
            return
        if time.monotonic() - self._synced_at < self.max_age_seconds:
            return
        with self._background_lock:
            if self._background is None or not self._background.is_alive():
                self._background = threading.Thread(target=self._sync_quietly, name="image-index-sync", daemon=True)
                self._background.start()
            running = self._background
        running.join(self.wait_seconds)

    def _sync_quietly(self) -> None:
        try:
            self.sync()
        except Exception:  # noqa: BLE001 - a background refresh; the next listing tries again
            log.warning("image index of tenant %s: background sync failed", self.library.tenant, exc_info=True)

    def query(self, query: ImageQuery = ImageQuery(), *, offset: int = 0, limit: int = 100,
              sync: bool = True) -> ImagePage:
        """A page of records, newest first, with the number of matching images."""
        if sync:
            self.refresh()
        where, values = _where(query)
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM images WHERE {where}", values).fetchone()[0]
            rows = self._db.execute(f"SELECT record FROM images WHERE {where} ORDER BY created_at DESC, image_name "
                                    "LIMIT ? OFFSET ?", [*values, limit, offset]).fetchall()
        return ImagePage([json.loads(row[0]) for row in rows], total, offset, limit)

    def names(self, query: ImageQuery = ImageQuery(), sync: bool = True) -> list[str]:
        """Every matching image's name (a board's images, to move or delete them)."""
        if sync:
            self.refresh()
        where, values = _where(query)
        with self._lock:
            return [row[0] for row in self._db.execute(f"SELECT image_name FROM images WHERE {where}", values)]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(record: dict[str, Any], version: str) -> tuple[Any, ...]:
    return (record["image_name"], version, str(record.get("created_at") or ""), record.get("board_id"),
            int(bool(record.get("starred"))), record.get("dag_id"), record.get("run_id"),
            str(record.get("image_category") or "general"), int(bool(record.get("is_intermediate"))),
            json.dumps(record, sort_keys=True))


def _where(query: ImageQuery) -> tuple[str, list[Any]]:
    clauses, values = ["1 = 1"], []
    if query.board_id == UNCATEGORIZED:
        clauses.append("board_id IS NULL")
    elif query.board_id is not None:
        clauses.append("board_id = ?")
        values.append(query.board_id)
    for column in ("dag_id", "run_id"):
        if getattr(query, column) is not None:
            clauses.append(f"{column} = ?")
            values.append(getattr(query, column))
    if query.starred is not None:
        clauses.append("starred = ?")
        values.append(int(query.starred))
    if query.categories is not None:
        clauses.append(f"image_category IN ({', '.join('?' * len(query.categories))})")
        values.extend(query.categories)
    if not query.include_intermediate:
        clauses.append("is_intermediate = 0")
    if query.since:
        clauses.append("created_at >= ?")
        values.append(query.since)
    if query.until:
        clauses.append("created_at < ?")
        values.append(query.until)
    return " AND ".join(clauses), values
