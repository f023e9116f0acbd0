"""The model dropdowns of the trigger form: which installed models a model field accepts.

:func:`param_specs <invokeai_provider.compiler.params.param_specs>` takes a ``model_names(node_type,
field_name)`` callback; :func:`model_names_from_registry` makes one over a model registry, and
:func:`registry_model_names` over the ``[invokeai] model_root`` registry, the source compiled DAGs use.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Optional

__all__ = ["ModelNames", "PARSE_RETRY_SECONDS", "model_names_from_registry", "registry_model_names"]

ModelNames = Callable[[str, str], list[str]]


def model_names_from_registry(registry: Any) -> ModelNames:
    """A ``model_names`` callback over a ModelRegistry: names of models whose base and type the field accepts.

    The field's ``ui_model_type`` and ``ui_model_base`` hints filter; a field without hints accepts any model.
    The registry is read once, when the callback is made.
    """
    from invokeai_provider.core.registry import InvocationRegistry

    configs = [(c.name, c.base.value, c.type.value) for c in registry.all()]

    def names(node_type: str, field_name: str) -> list[str]:
        info = InvocationRegistry.get_invocation_class(node_type).input_fields().get(field_name)
        extra = info.json_schema_extra if info is not None and isinstance(info.json_schema_extra, dict) else {}

        def accepted(hint: Any) -> Optional[set[str]]:
            if hint is None:
                return None
            values = hint if isinstance(hint, list) else [hint]
            return {v.value if isinstance(v, enum.Enum) else str(v) for v in values}

        bases, kinds = accepted(extra.get("ui_model_base")), accepted(extra.get("ui_model_type"))
        return sorted({name for name, base, kind in configs
                       if (bases is None or base in bases) and (kinds is None or kind in kinds)})

    return names


PARSE_RETRY_SECONDS = 5.0


def registry_model_names() -> Any:
    """The model dropdowns' source: the ``[invokeai] model_root`` registry, read once per compile (None
    when no model root is set or it cannot be read, so model fields stay free text)."""
    from invokeai_provider.config import settings

    root = settings().configured_model_root
    if not root:
        return None
    try:
        from invokeai_provider.models.model_manager.registry import ModelRegistry
        from invokeai_provider.storage.base import backend_for_uri

        backend = backend_for_uri(root)
        if hasattr(backend, "retry_seconds"):  # a remote root that is down: give up within the parse's time budget
            backend.retry_seconds = PARSE_RETRY_SECONDS
        return model_names_from_registry(ModelRegistry(backend))
    except Exception:  # an unreadable model root must not break DAG parsing
        return None
