"""The node registry: InvokeAI type strings to node and output classes, plus node pack loading."""

from __future__ import annotations

import importlib
import logging
import threading
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from invokeai_provider.errors import UnknownNodeTypeError

if TYPE_CHECKING:
    from invokeai_provider.core.invocation import BaseInvocation, BaseInvocationOutput

log = logging.getLogger(__name__)

NODE_PACK_ENTRY_POINT_GROUP = "invokeai_provider.nodes"
BUILTIN_NODE_PACK = "invokeai_provider.operators"  # its NODE_FAMILIES lists the modules to import


class InvocationRegistry:
    """Class-level registry filled by the `@invocation` and `@invocation_output` decorators."""

    _invocations: dict[str, type["BaseInvocation"]] = {}
    _outputs: dict[str, type["BaseInvocationOutput"]] = {}

    @classmethod
    def register_invocation(cls, node_class: type["BaseInvocation"]) -> None:
        node_type = node_class.get_type()
        if node_type in cls._invocations and cls._invocations[node_type].__module__ != node_class.__module__:
            log.warning("node type %r from %s overrides %s", node_type, node_class.__module__,
                        cls._invocations[node_type].__module__)
        cls._invocations[node_type] = node_class

    @classmethod
    def register_output(cls, output_class: type["BaseInvocationOutput"]) -> None:
        cls._outputs[output_class.get_type()] = output_class

    @classmethod
    def get_invocation_class(cls, node_type: str) -> type["BaseInvocation"]:
        load_node_packs()
        try:
            return cls._invocations[node_type]
        except KeyError:
            raise UnknownNodeTypeError(f'unknown node type "{node_type}"') from None

    @classmethod
    def get_output_class(cls, output_type: str) -> type["BaseInvocationOutput"]:
        load_node_packs()
        try:
            return cls._outputs[output_type]
        except KeyError:
            raise UnknownNodeTypeError(f'unknown output type "{output_type}"') from None

    @classmethod
    def invocation_classes(cls) -> dict[str, type["BaseInvocation"]]:
        load_node_packs()
        return dict(sorted(cls._invocations.items()))

    @classmethod
    def has_type(cls, node_type: str) -> bool:
        load_node_packs()
        return node_type in cls._invocations


_loaded = False
_load_lock = threading.RLock()


def load_node_packs() -> None:
    """Imports the built-in node families once, then every node pack registered by entry point."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        # The built-in nodes are a node pack like any other, found by name: the core never imports the nodes.
        builtin = importlib.import_module(BUILTIN_NODE_PACK)
        for family in builtin.NODE_FAMILIES:
            importlib.import_module(f"{BUILTIN_NODE_PACK}.{family}")
        for ep in entry_points(group=NODE_PACK_ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception:  # a broken custom pack must not hide the built-in nodes
                log.exception("could not load node pack %r (%s)", ep.name, ep.value)
        _loaded = True
