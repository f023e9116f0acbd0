"""Values between a node field and its trigger-form Param.

The form shows names where the node takes objects: a model by its name, an image by its ``image_name``, a
board by its id (none for "no board"). :func:`param_value` turns a node field's JSON value into what the form
shows (the Param's default); :func:`to_node_value` turns a Param value from a run's conf back into what the
node field takes.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Mapping

from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

if TYPE_CHECKING:
    from invokeai_provider.compiler.params import ParamSpec
    from invokeai_provider.core.invocation import BaseInvocation
    from invokeai_provider.graph.workflow import Document

__all__ = ["current_value", "param_value", "to_node_value"]

_BOARD_NONE = (None, "", "none", "auto")


# --- node value → form ----------------------------------------------------------------------------


def _workflow_input(document: "Document", node_id: str, field_name: str) -> tuple[bool, Any]:
    if document.workflow is None:
        return False, None
    for node in document.workflow.raw.get("nodes", []):
        if isinstance(node, Mapping) and str(node.get("id")) == node_id:
            spec = (node.get("data", {}).get("inputs") or {}).get(field_name)
            if isinstance(spec, Mapping) and "value" in spec:
                return True, to_jsonable_python(spec["value"])
            return False, None
    return False, None


def current_value(document: "Document", node: "BaseInvocation", field_name: str, info: FieldInfo
                   ) -> tuple[bool, Any]:
    """(has a value, the value as JSON): the workflow's input value, else the graph node's literal."""
    found, value = _workflow_input(document, node.id, field_name)
    if found:
        return True, value
    if field_name in node.model_fields_set:
        return True, to_jsonable_python(getattr(node, field_name))
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "orig_default" in extra:
        return True, extra["orig_default"]
    return False, None


def param_value(kind: str, value: Any) -> Any:
    """A node field value (JSON) as the form shows it: names for models, images and boards."""
    if isinstance(value, list) and kind in ("model", "image"):
        return [param_value(kind, v) for v in value]
    if kind == "model" and isinstance(value, Mapping):
        return value.get("name") or value.get("key")
    if kind == "image" and isinstance(value, Mapping):
        return value.get("image_name")
    if kind == "board":
        if isinstance(value, Mapping):
            value = value.get("board_id")
        return None if value in _BOARD_NONE else value
    return value


# --- form → node value ----------------------------------------------------------------------------


def to_node_value(spec: ParamSpec, value: Any) -> Any:
    """A Param value as the node field takes it (models stay names: model binding resolves them)."""
    kind = spec.item_kind if spec.kind == "batch" else spec.kind
    if spec.kind == "batch":
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_node_value(kind or "value", v) for v in value]
    return _node_value(kind, value)


def _node_value(kind: str, value: Any) -> Any:
    if isinstance(value, (list, tuple)) and kind in ("image", "model"):
        return [_node_value(kind, v) for v in value]
    if kind == "model":
        return None if value in (None, "") else copy.deepcopy(value)
    if kind == "image":
        if value in (None, ""):
            return None
        return copy.deepcopy(value) if isinstance(value, Mapping) else {"image_name": str(value)}
    if kind == "board":
        if isinstance(value, Mapping):
            value = value.get("board_id")
        return None if value in _BOARD_NONE else {"board_id": str(value)}
    return copy.deepcopy(value)
