"""Tenants: the run's storage prefix ``<tenant>/``, and the checks that keep a run inside it.

A run's tenant comes from its ``tenant`` Param (conf), else ``[invokeai] default_tenant``. It becomes the
first segment of every key the run writes (``<tenant>/runs/...``, ``<tenant>/usage/...``), so a name that
could be read as a path (``..``, ``a/b``, ``/abs``) is refused, as is any image, tensor or conditioning
reference a run is given that is not a plain name inside its own run: those names become storage keys.

Nothing heavy (nor Airflow) is imported here.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping, Optional

from invokeai_provider.errors import InvalidArtifactKeyError

TENANT_PARAM = "tenant"
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_TENANT = re.compile(TENANT_PATTERN)
TENANT_RULE = "1-63 lowercase letters, digits, '_' or '-', starting with a letter or digit"

# A stored object's name inside its run (images/<name>, tensors/<name>.safetensors): one path segment,
# the same characters the store accepts in a key segment.
ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._=+@:-]{0,199}$"
_ARTIFACT_NAME = re.compile(ARTIFACT_NAME_PATTERN)
# Field names whose string value names a stored object (fields.py: ImageField, LatentsField, ...).
REFERENCE_FIELDS = ("image_name", "video_name", "latents_name", "conditioning_name", "tensor_name", "mask_name",
                    "masked_latents_name")


class InvalidTenantError(InvalidArtifactKeyError):
    """A tenant name that is not one safe path segment."""


class ArtifactReferenceError(InvalidArtifactKeyError):
    """A stored-object reference given to a run that is not a plain name inside the run's own store."""


def check_tenant(value: Any, *, field: str = TENANT_PARAM) -> str:
    """The tenant name if it is safe as the first segment of a storage key; else InvalidTenantError
    naming ``field`` (where the value came from) and the rule."""
    if not isinstance(value, str):
        raise InvalidTenantError(f"{field}: expected a string ({TENANT_RULE}), got {type(value).__name__} {value!r}",
                                 field=field)
    if _TENANT.match(value):
        return value
    if not value:
        why = "is empty"
    elif value.startswith("/"):
        why = "is an absolute path"
    elif ".." in value:
        why = "contains '..'"
    elif "/" in value or "\\" in value:
        why = "contains a path separator"
    elif len(value) > 63:
        why = f"is {len(value)} characters long"
    elif not value[0].isalnum():
        why = "does not start with a letter or digit"
    else:
        why = "has characters outside the allowed set"
    raise InvalidTenantError(f"{field} {value!r} {why}: a tenant is the storage prefix <tenant>/ and must match "
                             f"{TENANT_PATTERN} ({TENANT_RULE})", field=field)


def resolve_tenant(params: Optional[Mapping[str, Any]] = None, conf: Optional[Mapping[str, Any]] = None,
                   default: Optional[str] = None) -> str:
    """The run's tenant: ``params.tenant``, else conf ``tenant``, else ``default`` (when None, ``[invokeai]
    default_tenant``); validated."""
    for source, values in (("params.tenant", params), ("conf tenant", conf)):
        if values and values.get(TENANT_PARAM) not in (None, ""):
            return check_tenant(values[TENANT_PARAM], field=source)
    if not default:
        from invokeai_provider.config import settings

        default = settings().default_tenant
    return check_tenant(default, field="[invokeai] default_tenant")


def _references(value: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """(path to the value, reference field, value) of every stored-object reference inside a node value."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in REFERENCE_FIELDS and item is not None:
                yield f"{path}.{key}", key, item
            else:
                yield from _references(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _references(item, f"{path}[{index}]")


def check_references(graph: Mapping[str, Any], run_prefix: str) -> None:
    """Refuses a graph (dict) whose node values name a stored object outside the run's own store.

    Names are resolved inside ``<run_prefix>/{images,tensors,conditioning}/``, so a valid reference is one
    plain name; a path, ``..``, an absolute path, a URI or another tenant's key is refused before any node
    runs, naming the node and field.
    """
    for node_id, field_name, value in _node_values(graph):
        for where, kind, name in _references(value, field_name):
            if isinstance(name, str) and _ARTIFACT_NAME.match(name):
                continue
            raise ArtifactReferenceError(
                f"node {node_id} field {where}: {name!r} points outside this run's store ({run_prefix}/); "
                f"expected the {kind} of an object in this run: one name matching {ARTIFACT_NAME_PATTERN}, "
                "not a path, URI or another tenant's key", node_id=node_id, field=field_name)


def _node_values(graph: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(node id, field, value) of every input value of a graph (dict), ``id`` and ``type`` left out."""
    for node_id, node in (graph.get("nodes") or {}).items():
        if isinstance(node, Mapping):
            for field_name, value in node.items():
                if field_name not in ("id", "type"):
                    yield str(node_id), field_name, value


def check_image_inputs(graph: Mapping[str, Any], store: Any) -> None:
    """Refuses a graph whose node values name an image (or a board) the run's tenant does not have, before any
    node runs, naming the node and field. An image is the run's own or any of its tenant's (an upload, another
    run's): another tenant's names are not found, since a library holds only its tenant's images."""
    from invokeai_provider.storage.library.images import ImageLibrary

    library = ImageLibrary(store.backend, store.tenant)
    for node_id, field_name, value in _node_values(graph):
        if field_name == "board" and isinstance(value, Mapping) and value.get("board_id"):
            _check_board(library, node_id, str(value["board_id"]))
        for where, kind, name in _references(value, field_name):
            if kind != "image_name" or not isinstance(name, str) or store.exists("images", name):
                continue
            if library.find(name) is None:
                raise ArtifactReferenceError(
                    f"node {node_id} field {where}: image {name!r} not found in tenant {store.tenant!r}: expected "
                    "the image_name of one of its images (an upload, or an image a run of the tenant made)",
                    node_id=node_id, field=field_name)


def _check_board(library: Any, node_id: str, board_id: str) -> None:
    """A node's ``board`` must be one of the tenant's boards (InvokeAI refuses an unknown board too)."""
    from invokeai_provider.storage.library.boards import BoardNotFoundError, Boards

    try:
        Boards(library).get(board_id)
    except BoardNotFoundError:
        raise ArtifactReferenceError(
            f"node {node_id} field board: board {board_id!r} not found in tenant {library.tenant!r}: expected the "
            "board_id of one of its boards (invokeai-airflow boards list)", node_id=node_id, field="board") from None
