"""The node context: what `invoke()` may use (images, tensors, conditioning, logger, progress, cancel).

It mirrors InvokeAI's InvocationContext interfaces. Storage goes through the run's artifact store with
deterministic names (prefix + exec node id + a per-node counter), so re-running a node rewrites its own
objects. Heavy libraries (PIL, torch, safetensors) are imported only when a method needs them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional, Sequence

from invokeai_provider.core.fields import MetadataField
from invokeai_provider.errors import ArtifactNotFoundError, CanceledError
from invokeai_provider.storage.base import RunStore, safe_segment
from invokeai_provider.storage.library.images import GRAPH_CHUNK, METADATA_CHUNK, WORKFLOW_CHUNK

if TYPE_CHECKING:
    from PIL.Image import Image

    from invokeai_provider.core.invocation import BaseInvocation
    from invokeai_provider.storage.intermediates import IntermediateObjects


ProgressCallback = Callable[[dict[str, Any]], None]


def off_device(run: "RunContext") -> ContextManager[None]:
    """Off the shared device for CPU or I/O work, where a device is shared (a ``device`` service: the GPU
    runtime's, or a chunk's in this process); elsewhere nothing waits for it and this does nothing."""
    device = run.services.get("device")
    return device.released() if device is not None else contextlib.nullcontext()


@dataclass
class RunContext:
    """What all nodes of one engine run share: the store, ids for records, documents for PNG chunks."""

    store: RunStore
    name_prefix: str = ""
    task_id: Optional[str] = None
    map_index: Optional[int] = None
    item_index: Optional[int] = None  # a mapped item's position among all items (chunks keep it)
    graph_json: Optional[dict[str, Any]] = None
    workflow_json: Optional[dict[str, Any]] = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    on_progress: Optional[ProgressCallback] = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("invokeai_provider.node"))
    services: dict[str, Any] = field(default_factory=dict)
    intermediates: Optional["IntermediateObjects"] = None  # set: tensors and conditioning stay in memory
    # set: equal nodes share their output (a graph.node_cache.NodeCache, typed Any: the core imports nothing above it)
    node_cache: Optional[Any] = None


class _NodeScope:
    """Per-node naming: every object a node writes gets ``<prefix><exec id>-<n>``."""

    def __init__(self, run: RunContext, exec_id: str) -> None:
        self.run = run
        self.exec_id = exec_id
        self._counters: dict[str, int] = {}
        self.records: list[dict[str, Any]] = []

    def next_name(self, kind: str, suffix: str = "") -> str:
        count = self._counters.get(kind, 0)
        self._counters[kind] = count + 1
        return f"{safe_segment(self.run.name_prefix + self.exec_id)}-{count}{suffix}"


class ImagesInterface:
    def __init__(self, scope: _NodeScope, node: "BaseInvocation") -> None:
        self._scope = scope
        self._node = node

    def save(self, image: "Image", *, metadata: Optional[MetadataField | dict[str, Any]] = None,
             board_id: Optional[str] = None, image_category: str = "general",
             is_intermediate: Optional[bool] = None) -> dict[str, Any]:
        """Writes a PNG with InvokeAI's text chunks and returns its image record.

        Metadata and board default to the node's own `metadata` / `board` inputs, as in InvokeAI.
        """
        from invokeai_provider.storage.library.images import ImageLibrary, new_record, png_bytes
        from invokeai_provider.storage.library.names import run_image_name

        if metadata is None:
            metadata = getattr(self._node, "metadata", None)
        if isinstance(metadata, MetadataField):
            metadata = metadata.root
        if board_id is None and getattr(self._node, "board", None) is not None:
            board_id = self._node.board.board_id  # type: ignore[union-attr]
        run = self._scope.run
        chunks = {}
        if metadata is not None:
            chunks[METADATA_CHUNK] = json.dumps(metadata)
        if run.workflow_json is not None:
            chunks[WORKFLOW_CHUNK] = json.dumps(run.workflow_json)
        if run.graph_json is not None:
            chunks[GRAPH_CHUNK] = json.dumps(run.graph_json)
        store = run.store
        # the slot (item, node, count) names the image for good: a retry overwrites, no other run shares it
        name = run_image_name(store.prefix, self._scope.next_name("images", ".png"))
        record = new_record(
            image_name=name, key=store.key("images", name), width=image.width, height=image.height,
            origin="internal", category=image_category, board_id=board_id,
            is_intermediate=self._node.is_intermediate if is_intermediate is None else is_intermediate,
            has_workflow=run.workflow_json is not None or run.graph_json is not None, tenant=store.tenant,
            dag_id=store.dag_id, run_id=store.run_id, task_id=run.task_id, map_index=run.map_index,
            item_index=run.item_index, session_id=store.prefix.rsplit("/", 1)[-1], node_id=self._scope.exec_id)
        with off_device(run):  # encoding and the store's writes need no device: other jobs use it meanwhile
            store.write("images", name, png_bytes(image, chunks))
            ImageLibrary(store.backend, store.tenant).add(record, image)  # its thumbnail, then its record
        record = {**record, "metadata": metadata, "uri": store.uri("images", name), "url": store.url("images", name)}
        self._scope.records.append(record)
        return record

    def _read(self, image_name: str) -> bytes:
        """From the run's own images, else from any of the tenant's (uploads, other runs' images)."""
        from invokeai_provider.storage.library.images import ImageLibrary

        store = self._scope.run.store
        try:
            return store.read("images", image_name)
        except ArtifactNotFoundError:
            return ImageLibrary(store.backend, store.tenant).read_image(image_name)

    def get_pil(self, image_name: str, mode: Optional[str] = None) -> "Image":
        from PIL import Image

        image = Image.open(io.BytesIO(self._read(image_name)))
        image.load()
        return image.convert(mode) if mode and image.mode != mode else image

    def get_metadata(self, image_name: str) -> Optional[MetadataField]:
        from PIL import Image

        with Image.open(io.BytesIO(self._read(image_name))) as image:
            raw = image.info.get(METADATA_CHUNK)
        return MetadataField.model_validate(json.loads(raw)) if raw else None


class TensorsInterface:
    """Tensors as safetensors objects; never pickle. With ``run.intermediates`` set they stay in memory for the
    engine call (`invokeai_provider.storage.intermediates`) and only the ones read outside it are written."""

    kind = "tensors"

    def __init__(self, scope: _NodeScope) -> None:
        self._scope = scope

    def save(self, tensor: Any) -> str:
        return self.save_dict({"tensor": tensor})

    def load(self, name: str) -> Any:
        return self.load_dict(name)["tensor"]

    def save_dict(self, tensors: dict[str, Any], metadata: Optional[dict[str, str]] = None) -> str:
        """Holds the object in the run's intermediates when it has them (the engine call persists the ones
        read outside it), else writes it to the store."""
        name = self._scope.next_name(self.kind)
        intermediates = self._scope.run.intermediates
        if intermediates is not None:
            intermediates.put(self.kind, name, tensors, metadata)
            return name
        from safetensors.torch import save

        data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
        self._scope.run.store.write(self.kind, name + ".safetensors", data)
        return name

    def load_dict(self, name: str) -> dict[str, Any]:
        """From the run's intermediates when held there, else from the store (other tasks' objects)."""
        intermediates = self._scope.run.intermediates
        held = intermediates.get(self.kind, name) if intermediates is not None else None
        if held is not None:
            return held[0]
        from safetensors.torch import load

        return load(self._scope.run.store.read(self.kind, name + ".safetensors"))

    def load_metadata(self, name: str) -> dict[str, str]:
        intermediates = self._scope.run.intermediates
        metadata = intermediates.metadata(self.kind, name) if intermediates is not None else None
        if metadata is not None:
            return metadata
        data = self._scope.run.store.read(self.kind, name + ".safetensors")
        header_len = int.from_bytes(data[:8], "little")
        return json.loads(data[8:8 + header_len]).get("__metadata__", {})


class ConditioningInterface(TensorsInterface):
    """Conditioning data as safetensors (tensors plus a JSON description in the header metadata)."""

    kind = "conditioning"


class UtilInterface:
    def __init__(self, scope: _NodeScope) -> None:
        self._scope = scope

    def is_canceled(self) -> bool:
        return self._scope.run.cancel_event.is_set()

    def raise_if_canceled(self) -> None:
        if self.is_canceled():
            raise CanceledError(f"run canceled while node {self._scope.exec_id} was running")

    def off_device(self) -> ContextManager[None]:
        """Lets other jobs use the device while this node does CPU-only work (parsing a prompt), where a device
        is shared (the GPU runtime's ``device`` service); elsewhere nothing waits for it and this does nothing."""
        return off_device(self._scope.run)

    def signal_progress(self, message: str, percentage: Optional[float] = None, **extra: Any) -> None:
        """Reports progress (to the task log, or to a runtime client) and stops here if the run was canceled."""
        event = {"node_id": self._scope.exec_id, "message": message, "percentage": percentage, **extra}
        if self._scope.run.on_progress is not None:
            self._scope.run.on_progress(event)
        else:
            self._scope.run.logger.info("%s: %s%s", self._scope.exec_id, message,
                                        f" ({percentage:.0%})" if percentage is not None else "")
        self.raise_if_canceled()


def canceled_outcomes(contexts: Sequence["InvocationContext"]) -> dict[int, BaseException]:
    """The CanceledError of each node context whose run is canceled, by position: the items of a batch that are not
    to run (the others carry on without them)."""
    outcomes: dict[int, BaseException] = {}
    for number, context in enumerate(contexts):
        try:
            context.util.raise_if_canceled()
        except BaseException as exc:  # noqa: BLE001 - the item's own outcome
            outcomes[number] = exc
    return outcomes


class InvocationContext:
    """Passed to `invoke()`; one per executed node."""

    def __init__(self, run: RunContext, node: "BaseInvocation", exec_id: str) -> None:
        self._scope = _NodeScope(run, exec_id)
        self.node_id = node.id
        self.exec_id = exec_id
        self.images = ImagesInterface(self._scope, node)
        self.tensors = TensorsInterface(self._scope)
        self.conditioning = ConditioningInterface(self._scope)
        self.util = UtilInterface(self._scope)
        self.logger = run.logger
        self.services = run.services

    @property
    def records(self) -> list[dict[str, Any]]:
        """Image records this node wrote."""
        return self._scope.records
