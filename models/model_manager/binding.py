"""Binding model fields to registered models before a graph is parsed.

Wherever a model is named (a workflow exported from another InvokeAI, ``--set node.model=NAME``, a DAG
Param), the value may be a registered model's key or name, or an identifier whose key means nothing
here; each becomes the identifier of the registered model (matched by key, hash, then name).
"""

from __future__ import annotations

import typing
from typing import Any

from invokeai_provider.core.aliases import LEGACY_NODE_ALIASES
from invokeai_provider.core.fields import ModelIdentifierField
from invokeai_provider.core.registry import InvocationRegistry
from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.models.model_manager.registry import ModelRegistry, UnknownModelError


def _is_model_field(annotation: Any) -> bool:
    return annotation is ModelIdentifierField or ModelIdentifierField in typing.get_args(annotation)


def model_fields_of(node_type: str) -> list[str]:
    """The model fields of a node type; a removed type InvokeAI still loads (``canny_image_processor``) as its
    current type's."""
    alias = LEGACY_NODE_ALIASES.get(node_type)
    if alias is not None:
        if alias.new_type is None:
            return []
        node_type = alias.new_type
    node_class = InvocationRegistry.get_invocation_class(node_type)
    return [name for name in node_class.input_fields() if _is_model_field(node_class.input_type(name))]


def bind_model_value(node_id: str, node_type: str, field: str, value: Any, registry: ModelRegistry) -> dict[str, Any]:
    """The identifier of the registered model that ``value`` (a key, a name or an identifier) names, for the
    model field ``field`` of node ``node_id``; an unknown model is an error naming the node and field."""
    try:
        config = registry.resolve(value if isinstance(value, (str, dict)) else str(value))
    except UnknownModelError as exc:
        raise InvokeAIProviderError(f"node {node_id} ({node_type}): field {field}: {exc}",
                                    node_id=node_id, field=field) from None
    submodel = value.get("submodel_type") if isinstance(value, dict) else None
    return {**config.identifier(), "submodel_type": submodel}


def bind_model_fields(graph_dict: dict[str, Any], registry: ModelRegistry) -> dict[str, Any]:
    """A copy of the graph dict whose model field values are identifiers of registered models."""
    nodes = {}
    for node_id, node in graph_dict["nodes"].items():
        node = dict(node)
        node_type = str(node.get("type"))
        for field in model_fields_of(node_type):
            if node.get(field) is not None:
                node[field] = bind_model_value(node_id, node_type, field, node[field], registry)
        nodes[node_id] = node
    return {**graph_dict, "nodes": nodes}


def graph_names_models(graph_dict: dict[str, Any]) -> bool:
    """Whether any node sets a model field (so a registry is needed to run it)."""
    return any(node.get(field) is not None for node in graph_dict["nodes"].values()
               for field in model_fields_of(str(node.get("type"))))
