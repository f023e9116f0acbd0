"""The in-process model cache: loaded models kept in RAM, and on the execution device while in use.

Two byte budgets, like InvokeAI's cache (reference §4.6): models stay in RAM up to ``ram_bytes``; the
models most recently used stay on the execution device (VRAM) up to ``vram_bytes`` and are moved back to
RAM when space is needed. Least recently used models are evicted first; a model in use is never
evicted. Lookups are safe from several threads, and construction is serialised (one model is built at
a time) because model construction in diffusers/transformers is not thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional


def model_bytes(model: Any) -> int:
    """Bytes of a torch module's parameters and buffers, or of a state dict; 0 for tokenizers and configs."""
    if isinstance(model, dict):
        return sum(v.numel() * v.element_size() for v in model.values() if hasattr(v, "element_size"))
    if hasattr(model, "parameters") and hasattr(model, "buffers"):
        tensors = list(model.parameters()) + list(model.buffers())
        return sum(t.numel() * t.element_size() for t in tensors)
    return 0


def _device_of(model: Any) -> Optional[str]:
    for tensor in model.parameters() if hasattr(model, "parameters") else []:
        return str(tensor.device)
    return None


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    load_seconds: float = 0.0
    evictions: int = 0
    loaded: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "load_seconds": round(self.load_seconds, 4),
                "evictions": self.evictions}

    def report(self) -> dict[str, Any]:
        """The figures with the keys of the models built: what a task's usage record carries."""
        return {**self.as_dict(), "loaded": list(self.loaded)}


@dataclass
class _Entry:
    model: Any
    size: int
    locks: int = 0
    # held while the model is in use: nodes patch weights (LoRAs, embeddings) for the duration of a use
    in_use: threading.RLock = field(default_factory=threading.RLock)


class ModelCache:
    def __init__(self, *, ram_bytes: int, vram_bytes: int = 0, execution_device: str = "cpu",
                 storage_device: str = "cpu") -> None:
        self.ram_bytes = ram_bytes
        self.vram_bytes = vram_bytes
        self.execution_device = execution_device
        self.storage_device = storage_device
        self.stats = CacheStats()
        self._tracked = threading.local()  # the CacheStats of the job running in this thread, if any
        self._entries: "OrderedDict[str, _Entry]" = OrderedDict()  # least recently used first
        self._lock = threading.RLock()
        self._build_lock = threading.Lock()

    @property
    def offloads(self) -> bool:
        return self.execution_device != self.storage_device

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def get(self, key: str, build: Callable[[], Any]) -> Any:
        """The cached model for ``key``, building it (once, even with concurrent callers) on a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self._count(hits=1)
                return entry.model
        with self._build_lock:
            with self._lock:  # another thread may have built it while we waited
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self._count(hits=1)
                    return entry.model
            started = time.perf_counter()
            model = build()
            elapsed = time.perf_counter() - started
            with self._lock:
                self._count(misses=1, load_seconds=elapsed, loaded=key)
                self._entries[key] = _Entry(model, model_bytes(model))
                self._make_room_in_ram(keep=key)
            return model

    @contextmanager
    def track(self) -> Iterator[CacheStats]:
        """The figures of what this thread asks of the cache inside the block: one job's hits, misses and
        load seconds, even while other threads (jobs of a GPU runtime) use the same cache."""
        outer = getattr(self._tracked, "stats", None)
        stats = self._tracked.stats = CacheStats()
        try:
            yield stats
        finally:
            self._tracked.stats = outer

    def _count(self, *, hits: int = 0, misses: int = 0, load_seconds: float = 0.0, evictions: int = 0,
               loaded: Optional[str] = None) -> None:
        tracked = getattr(self._tracked, "stats", None)
        for stats in (self.stats, tracked) if tracked is not None else (self.stats,):
            stats.hits += hits
            stats.misses += misses
            stats.load_seconds += load_seconds
            stats.evictions += evictions
            if loaded is not None:
                stats.loaded.append(loaded)

    @contextmanager
    def use(self, key: str, build: Callable[[], Any], *, on_storage_device: bool = False) -> Iterator[Any]:
        """The model on the execution device (or, ``on_storage_device``, kept in RAM and run there) for the duration
        of the block; it cannot be evicted meanwhile."""
        model = self.get(key, build)
        with self._lock:
            entry = self._entries[key]
            entry.locks += 1
            if on_storage_device and hasattr(model, "to"):
                model.to(self.storage_device)
            elif self.offloads and hasattr(model, "to"):
                self._make_room_on_device(entry.size, keep=key)
                model.to(self.execution_device)
        try:
            with entry.in_use:
                yield model
        finally:
            with self._lock:
                entry.locks -= 1

    def _make_room_in_ram(self, keep: str) -> None:
        total = sum(e.size for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.ram_bytes:
                return
            entry = self._entries[key]
            if entry.locks == 0 and key != keep:
                total -= entry.size
                del self._entries[key]
                self._count(evictions=1)

    def _make_room_on_device(self, needed: int, keep: str) -> None:
        if not self.vram_bytes:
            return
        on_device = [(k, e) for k, e in self._entries.items()
                     if k != keep and hasattr(e.model, "to") and _device_of(e.model) not in (None, self.storage_device)]
        used = sum(e.size for _, e in on_device)
        for key, entry in on_device:  # least recently used first
            if used + needed <= self.vram_bytes:
                return
            if entry.locks == 0:
                entry.model.to(self.storage_device)
                used -= entry.size

    def clear(self) -> None:
        with self._lock:
            self._entries = OrderedDict((k, e) for k, e in self._entries.items() if e.locks)
