"""Tensors and conditioning that nodes pass to each other inside one engine call, held in memory.

Writing every latent and conditioning object to the artifact store (S3 in a cluster) and reading it back in
the next node costs a round trip per object that nobody outside the task ever reads. While an engine call
runs, `TensorsInterface` puts them here instead (when the run context has an `IntermediateObjects`); when it
ends, only the objects named by values that leave the call (another task's inputs, the run's outputs) are
written to the store, byte for byte as `TensorsInterface` would have written them (`persist_referenced`).

One holder may serve several graphs run concurrently in threads: every method is thread-safe, and the
deterministic object names are unique across them. torch and safetensors are imported only when needed.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

if TYPE_CHECKING:
    from invokeai_provider.storage.base import RunStore

KINDS = ("tensors", "conditioning")


def _cpu_copy(value: Any) -> Any:
    """Detached, contiguous, on CPU (as TensorsInterface stores it), and never sharing memory with the
    caller's tensor: a node that changes its tensor in place after saving it must not change what was saved."""
    tensor = value.detach()
    held = tensor.contiguous().cpu()
    if held.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr() and tensor.numel():
        held = held.clone()
    return held


def _check_metadata(metadata: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
    """Refuses what safetensors would refuse when the object is persisted, so the error comes at `put`."""
    if metadata is None:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError(f"safetensors metadata must map str to str, got {metadata!r}")
    return dict(metadata)


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON-like value (dict values, list/tuple/set items), iteratively."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)


class IntermediateObjects:
    """The tensors and conditioning saved during one engine call, keyed by (kind, name).

    Objects stay in memory as tensors (no safetensors round trip); `persist*` writes the ones that must
    outlive the call. Persisted objects stay readable here, and are not written a second time unless they
    are put again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._persist_lock = threading.Lock()  # one persist at a time; puts and gets go on meanwhile
        self._objects: dict[tuple[str, str], tuple[dict[str, Any], Optional[dict[str, str]]]] = {}
        self._persisted: set[tuple[str, str]] = set()

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown intermediate kind {kind!r} (expected one of {KINDS})")

    def put(self, kind: str, name: str, tensors: dict[str, Any], metadata: Optional[dict[str, str]] = None) -> None:
        """Holds ``tensors`` (copied to CPU, detached, contiguous) and their string metadata under (kind, name);
        putting a name again replaces the object (and it will be persisted again)."""
        self._check_kind(kind)
        held = {str(key): _cpu_copy(value) for key, value in tensors.items()}
        meta = _check_metadata(metadata)
        with self._lock:
            self._objects[(kind, name)] = (held, meta)
            self._persisted.discard((kind, name))

    def get(self, kind: str, name: str) -> Optional[tuple[dict[str, Any], dict[str, str]]]:
        """(tensors, metadata) of a held object, None when it is not held. The tensors are fresh clones, so a
        reader can never change what another reads (as with objects read from the store)."""
        self._check_kind(kind)
        with self._lock:
            entry = self._objects.get((kind, name))
        if entry is None:
            return None
        tensors, metadata = entry
        return {key: value.clone() for key, value in tensors.items()}, dict(metadata or {})

    def metadata(self, kind: str, name: str) -> Optional[dict[str, str]]:
        """The metadata of a held object without copying its tensors; None when it is not held."""
        self._check_kind(kind)
        with self._lock:
            entry = self._objects.get((kind, name))
        return None if entry is None else dict(entry[1] or {})

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._objects

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def names(self) -> set[str]:
        """The names of the held objects (of either kind)."""
        with self._lock:
            return {name for _, name in self._objects}

    @property
    def bytes_held(self) -> int:
        """Bytes of tensor data held (what this call keeps out of the store, or has not written yet)."""
        with self._lock:
            entries = list(self._objects.values())
        return sum(t.numel() * t.element_size() for tensors, _ in entries for t in tensors.values())

    def persist(self, store: "RunStore", names: Iterable[str]) -> int:
        """Writes the held objects whose name is in ``names`` (of either kind: a node's first tensor and its
        first conditioning share a name, and writing both is harmless) to ``store``, as TensorsInterface
        writes them: ``<kind>/<name>.safetensors`` with the metadata in the header. Objects already
        persisted are skipped. Returns how many objects were written."""
        wanted = set(names)
        return self._persist(store, lambda key: key[1] in wanted)

    def persist_referenced(self, store: "RunStore", values: Any) -> int:
        """Persists every held object whose name is a string anywhere in ``values`` (JSON-like: node outputs
        dumped with ``model_dump(mode="json")``, XCom values...), whatever field holds it."""
        return self.persist(store, _strings(values))

    def persist_all(self, store: "RunStore") -> int:
        """Persists every held object (``[invokeai] keep_intermediates``: all of them for debugging)."""
        return self._persist(store, lambda key: True)

    def _persist(self, store: "RunStore", selected: Callable[[tuple[str, str]], bool]) -> int:
        written = 0
        with self._persist_lock:
            with self._lock:
                todo = [(key, entry) for key, entry in self._objects.items()
                        if key not in self._persisted and selected(key)]
            if not todo:
                return 0  # a task that held nothing need not load torch
            from safetensors.torch import save

            for (kind, name), (tensors, metadata) in sorted(todo, key=lambda item: item[0]):
                store.write(kind, name + ".safetensors", save(tensors, metadata=metadata))
                written += 1
                with self._lock:
                    if self._objects.get((kind, name)) is not None and self._objects[(kind, name)][0] is tensors:
                        self._persisted.add((kind, name))  # unless it was put again meanwhile
        return written

    def clear(self) -> None:
        """Drops every held object (the engine call is over: free the memory)."""
        with self._lock:
            self._objects.clear()
            self._persisted.clear()
