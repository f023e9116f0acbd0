"""Host-local disk cache for model files that live in a remote model root (S3 and the like).

All workers on a host share one cache directory. A model is fetched once per host even when several
tasks ask for it at the same moment (an exclusive file lock per entry), it appears under its final
path only when complete (downloaded into a staging folder, then renamed), and the least recently used
entries are removed when the cache grows past its byte budget, except entries some process is using
(they hold a shared lock on the entry while they read it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from invokeai_provider.storage.base import check_key

Fetch = Callable[[Path], None]


def _tree_bytes(path: Path) -> int:
    """Bytes under ``path``; files another process removes meanwhile count as nothing."""
    if not path.is_dir():
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0
    total = 0
    for folder, _, files in os.walk(path):  # os.walk skips folders that vanish while it runs
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total


class DiskCache:
    def __init__(self, root: str | os.PathLike[str], budget_bytes: int) -> None:
        self.root = Path(root)
        self.budget_bytes = budget_bytes
        (self.root / "entries").mkdir(parents=True, exist_ok=True)
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        (self.root / "staging").mkdir(parents=True, exist_ok=True)

    def _entry(self, key: str) -> Path:
        if "/" in key:
            raise ValueError(f"disk cache key {key!r} must be a single path segment")
        return self.root / "entries" / check_key(key)

    @contextmanager
    def _lock(self, key: str, mode: int) -> Iterator[bool]:
        """A flock on the entry's lock file; yields False if ``mode`` is non-blocking and the lock is held."""
        path = self.root / "locks" / f"{check_key(key)}.lock"
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, mode)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def use(self, key: str, fetch: Fetch) -> Iterator[Path]:
        """The local copy of ``key``, fetched first if missing; it is not evicted while the block runs.

        ``fetch(destination)`` writes the model (a file or a folder) at ``destination``.
        """
        entry = self._entry(key)
        while True:
            if not entry.exists():
                self._fetch(key, entry, fetch)
            with self._lock(key, fcntl.LOCK_SH):
                if entry.exists():  # else it was evicted between the fetch and the lock: fetch again
                    os.utime(self.root / "locks" / f"{entry.name}.lock")  # last use, for LRU
                    self._evict(keep=entry.name)
                    yield entry
                    return

    def _fetch(self, key: str, entry: Path, fetch: Fetch) -> None:
        with self._lock(key, fcntl.LOCK_EX):
            if entry.exists():  # another process fetched it while we waited
                return
            staging = self.root / "staging" / uuid.uuid4().hex
            staging.mkdir()
            try:
                target = staging / entry.name
                fetch(target)
                if not target.exists():
                    raise FileNotFoundError(f"fetching {key!r} produced nothing at {target}")
                os.replace(target, entry)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def _evict(self, keep: str) -> None:
        entries = [p for p in (self.root / "entries").iterdir() if p.name != keep]
        total = sum(_tree_bytes(p) for p in entries) + _tree_bytes(self._entry(keep))

        def last_used(path: Path) -> float:
            lock = self.root / "locks" / f"{path.name}.lock"
            return lock.stat().st_mtime if lock.exists() else 0.0

        for path in sorted(entries, key=last_used):
            if total <= self.budget_bytes:
                return
            with self._lock(path.name, fcntl.LOCK_EX | fcntl.LOCK_NB) as free:
                if not free:
                    continue  # in use by another process
                if not path.exists():  # another process evicted it first
                    continue
                size = _tree_bytes(path)
                # renamed away first, so a removal that fails halfway never leaves a partial entry behind
                trash = self.root / "staging" / f"evicted-{uuid.uuid4().hex}"
                os.replace(path, trash)
                if trash.is_dir():
                    shutil.rmtree(trash, ignore_errors=True)
                else:
                    trash.unlink(missing_ok=True)
                total -= size

    def keys(self) -> list[str]:
        return sorted(p.name for p in (self.root / "entries").iterdir())
