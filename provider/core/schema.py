"""Node descriptions for ``invokeai-airflow nodes --json`` (and later, operator docs and trigger forms)."""

from __future__ import annotations

import inspect
from typing import Any

from invokeai_provider.core.registry import InvocationRegistry

_NODE_ATTRIBUTES = ("id", "type", "is_intermediate", "use_cache")


def describe_nodes() -> list[dict[str, Any]]:
    """Every registered node type with its inputs' and output's JSON schema, sorted by type."""
    described = []
    for node_type, node_class in InvocationRegistry.invocation_classes().items():
        ui = node_class.UIConfig
        input_schema = node_class.model_json_schema(mode="validation")
        for attribute in _NODE_ATTRIBUTES:
            input_schema.get("properties", {}).pop(attribute, None)
        input_schema["required"] = [name for name, info in node_class.input_fields().items()
                                    if (info.json_schema_extra or {}).get("orig_required")]  # type: ignore[union-attr]
        output_class = node_class.get_output_annotation()
        output_schema = output_class.model_json_schema(mode="serialization")
        output_schema.get("properties", {}).pop("type", None)
        described.append({
            "type": node_type,
            "title": ui.title,
            "description": inspect.cleandoc(node_class.__doc__ or ""),
            "category": ui.category,
            "tags": ui.tags or [],
            "version": ui.version,
            "classification": ui.classification.value,
            "node_pack": ui.node_pack,
            "gpu": ui.gpu,
            "use_cache": node_class.model_fields["use_cache"].default,
            "inputs": input_schema,
            "output_type": output_class.get_type(),
            "outputs": output_schema,
        })
    return described
