"""InvokeAI graph JSON (reference §2.1): parsing into node models, and validation with every rule of §2.2."""

from __future__ import annotations

import heapq
import json
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Mapping, Optional, get_args, get_origin

from pydantic import ValidationError

from invokeai_provider.core.aliases import resolve_edges, resolve_node
from invokeai_provider.core.invocation import BaseInvocation
from invokeai_provider.core.registry import InvocationRegistry
from invokeai_provider.core.typecompat import (
    are_connection_types_compatible,
    collected_item_fits,
    collection_item_types,
    is_any,
    is_list_or_contains_list,
    root_types,
    single_item_types,
    type_name,
)
from invokeai_provider.errors import (
    CyclicalGraphError,
    DuplicateNodeIdError,
    GraphParseError,
    InvalidEdgeError,
    NodeFieldNotFoundError,
    NodeIdMismatchError,
    NodeNotFoundError,
    NodeValidationError,
    UnknownNodeTypeError,
)

ITERATE = "iterate"
COLLECT = "collect"
IF = "if"
ITEM_FIELD = "item"
COLLECTION_FIELD = "collection"


@dataclass(frozen=True, order=True)
class EdgeConnection:
    node_id: str
    field: str

    def __str__(self) -> str:
        return f"{self.node_id}.{self.field}"


@dataclass(frozen=True, order=True)
class Edge:
    source: EdgeConnection
    destination: EdgeConnection

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": {"node_id": self.source.node_id, "field": self.source.field},
            "destination": {"node_id": self.destination.node_id, "field": self.destination.field},
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Edge":
        try:
            src, dst = data["source"], data["destination"]
            return cls(EdgeConnection(str(src["node_id"]), str(src["field"])),
                       EdgeConnection(str(dst["node_id"]), str(dst["field"])))
        except (KeyError, TypeError):
            raise GraphParseError(
                f"malformed edge {json.dumps(data, default=str)[:200]}: expected "
                '{"source": {"node_id", "field"}, "destination": {"node_id", "field"}}'
            ) from None

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination}"


def build_node(node_key: str, data: Any) -> BaseInvocation:
    """Builds one node model from its JSON dict, with errors that name the node and the field."""
    if not isinstance(data, Mapping):
        raise GraphParseError(f"node {node_key}: expected an object, got {type(data).__name__}", node_id=node_key)
    given_type = data.get("type")
    data = resolve_node(node_key, data)  # an old, removed type loads as its current node
    node_type = data.get("type")
    if not isinstance(node_type, str):
        raise GraphParseError(f'node {node_key}: missing "type" string', node_id=node_key, field="type")
    try:
        node_class = InvocationRegistry.get_invocation_class(node_type)
    except UnknownNodeTypeError:
        raise UnknownNodeTypeError(
            f'node {node_key}: unknown node type "{node_type}" (see `invokeai-airflow nodes` for the registered types)',
            node_id=node_key, field="type",
        ) from None
    values = dict(data)
    values.setdefault("id", node_key)
    try:
        return node_class.model_validate(values)
    except ValidationError as exc:
        error = node_validation_error(node_key, node_class, exc)
        if given_type != node_type:
            error.args = (f"{error} (the node's old type {given_type} loads as {node_type})",)
        raise error from None


def validation_problem(error: Mapping[str, Any]) -> str:
    """What one pydantic error says: a validator's own message as raised, else pydantic's text."""
    if error.get("type") == "value_error" and (error.get("ctx") or {}).get("error") is not None:
        return str(error["ctx"]["error"])
    return str(error.get("msg", "is invalid"))


def node_validation_error(node_id: str, node_class: type[BaseInvocation], exc: ValidationError) -> NodeValidationError:
    first = exc.errors()[0]
    # a node-level check (no loc) names the input it is about on the error it raises (core.limits)
    loc = first.get("loc") or (getattr((first.get("ctx") or {}).get("error"), "field", None) or "?",)
    field = ".".join(str(p) for p in loc)
    top = str(loc[0])
    if first.get("type") == "extra_forbidden":
        known = ", ".join(sorted(node_class.input_fields()))
        message = f'node {node_id} ({node_class.get_type()}): unknown field "{top}"; expected one of: {known}'
    elif first.get("type") == "value_error":  # a check of ours (a limit, a validator): its message says it all
        message = f'node {node_id} ({node_class.get_type()}): field "{field}": {validation_problem(first)}'
    else:
        expected = type_name(node_class.input_type(top)) if top in node_class.model_fields else "?"
        message = (f'node {node_id} ({node_class.get_type()}): field "{field}" {first.get("msg", "is invalid")}'
                   f" (expected {expected}, got {json.dumps(first.get('input'), default=str)[:120]})")
    return NodeValidationError(message, node_id=node_id, field=top)


class Graph:
    """A flat graph of node models and edges, as InvokeAI holds it."""

    def __init__(self, nodes: Mapping[str, BaseInvocation], edges: Iterable[Edge], id: Optional[str] = None) -> None:
        self.id = id or str(uuid.uuid4())
        self.nodes: dict[str, BaseInvocation] = dict(nodes)
        self.edges: list[Edge] = list(edges)

    # --- parsing ----------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any) -> "Graph":
        if not isinstance(data, Mapping):
            raise GraphParseError(f"a graph must be a JSON object, got {type(data).__name__}")
        raw_nodes = data.get("nodes", {})
        raw_edges = data.get("edges", [])
        if not isinstance(raw_nodes, Mapping):
            raise GraphParseError('graph "nodes" must be an object keyed by node id')
        if not isinstance(raw_edges, list):
            raise GraphParseError('graph "edges" must be a list')
        nodes = {str(key): build_node(str(key), value) for key, value in raw_nodes.items()}
        old_types = {str(key): value.get("type") for key, value in raw_nodes.items()}
        edges = [Edge.from_dict(e) for e in resolve_edges(old_types, raw_edges)]
        return cls(nodes, edges, id=data.get("id"))

    @classmethod
    def from_json(cls, text: str) -> "Graph":
        return cls.from_dict(load_json(text))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "nodes": {key: node.model_dump(mode="json") for key, node in self.nodes.items()},
            "edges": [e.to_dict() for e in self.edges],
        }

    # --- indexes ----------------------------------------------------------------------------------

    @cached_property
    def _inputs(self) -> dict[str, list[Edge]]:
        index: dict[str, list[Edge]] = {node_id: [] for node_id in self.nodes}
        for edge in self.edges:
            index.setdefault(edge.destination.node_id, []).append(edge)
        return index

    @cached_property
    def _outputs(self) -> dict[str, list[Edge]]:
        index: dict[str, list[Edge]] = {node_id: [] for node_id in self.nodes}
        for edge in self.edges:
            index.setdefault(edge.source.node_id, []).append(edge)
        return index

    def input_edges(self, node_id: str, field: Optional[str] = None) -> list[Edge]:
        edges = self._inputs.get(node_id, [])
        return edges if field is None else [e for e in edges if e.destination.field == field]

    def output_edges(self, node_id: str, field: Optional[str] = None) -> list[Edge]:
        edges = self._outputs.get(node_id, [])
        return edges if field is None else [e for e in edges if e.source.field == field]

    def parents(self, node_id: str) -> list[str]:
        return list(dict.fromkeys(e.source.node_id for e in self.input_edges(node_id)))

    def children(self, node_id: str) -> list[str]:
        return list(dict.fromkeys(e.destination.node_id for e in self.output_edges(node_id)))

    def leaves(self) -> list[str]:
        return [n for n in self.nodes if not self._outputs.get(n)]

    def type_of(self, node_id: str) -> str:
        return self.nodes[node_id].get_type()

    @cached_property
    def topological_order(self) -> list[str]:
        """Kahn's order, ties broken by the order nodes appear in the document (deterministic)."""
        position = {node_id: i for i, node_id in enumerate(self.nodes)}
        indegree = {node_id: len(self.parents(node_id)) for node_id in self.nodes}
        ready = [(position[n], n) for n, d in indegree.items() if d == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, node_id = heapq.heappop(ready)
            order.append(node_id)
            for child in self.children(node_id):
                indegree[child] -= 1
                if indegree[child] == 0:
                    heapq.heappush(ready, (position[child], child))
        return order

    def ancestors(self, node_id: str) -> set[str]:
        seen: set[str] = set()
        stack = self.parents(node_id)
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.parents(current))
        return seen

    # --- field types ------------------------------------------------------------------------------

    def output_type(self, conn: EdgeConnection) -> Any:
        fields = self.nodes[conn.node_id].get_output_annotation().model_fields
        return fields[conn.field].annotation if conn.field in fields else None

    def input_type(self, conn: EdgeConnection) -> Any:
        return type(self.nodes[conn.node_id]).input_type(conn.field)

    # --- validation (reference §2.2, in InvokeAI's order) ------------------------------------------

    def validate(self) -> None:
        """Raises the first rule violation found; returns None for a valid graph."""
        self._validate_unique_ids()
        self._validate_id_mapping()
        self._validate_edge_endpoints()
        self._validate_single_input_edges()
        self._validate_acyclic()
        self._validate_edge_types()
        self._validate_special_nodes()

    def is_valid(self) -> bool:
        try:
            self.validate()
        except (DuplicateNodeIdError, NodeIdMismatchError, NodeNotFoundError, NodeFieldNotFoundError,
                CyclicalGraphError, InvalidEdgeError):
            return False
        return True

    def _validate_unique_ids(self) -> None:
        seen: set[str] = set()
        for node in self.nodes.values():
            if node.id in seen:
                raise DuplicateNodeIdError(f"node id {node.id} is used by more than one node; ids must be unique",
                                           node_id=node.id, field="id")
            seen.add(node.id)

    def _validate_id_mapping(self) -> None:
        for key, node in self.nodes.items():
            if key != node.id:
                raise NodeIdMismatchError(f'node key "{key}" differs from its id "{node.id}"; they must be equal',
                                          node_id=key, field="id")

    def _validate_edge_endpoints(self) -> None:
        for edge in self.edges:
            for end, role in ((edge.source, "source"), (edge.destination, "destination")):
                if end.node_id not in self.nodes:
                    raise NodeNotFoundError(f"edge {edge}: {role} node {end.node_id} does not exist in the graph",
                                            node_id=end.node_id)
            source = self.nodes[edge.source.node_id]
            output_fields = source.get_output_annotation().model_fields
            if edge.source.field not in output_fields or edge.source.field == "type":
                names = ", ".join(f for f in output_fields if f != "type")
                raise NodeFieldNotFoundError(
                    f"edge {edge}: node {edge.source.node_id} ({source.get_type()}) has no output field "
                    f'"{edge.source.field}"; expected one of: {names}',
                    node_id=edge.source.node_id, field=edge.source.field)
            destination = self.nodes[edge.destination.node_id]
            if edge.destination.field not in type(destination).input_fields():
                names = ", ".join(type(destination).input_fields())
                raise NodeFieldNotFoundError(
                    f"edge {edge}: node {edge.destination.node_id} ({destination.get_type()}) has no input field "
                    f'"{edge.destination.field}"; expected one of: {names}',
                    node_id=edge.destination.node_id, field=edge.destination.field)

    def _validate_single_input_edges(self) -> None:
        seen: dict[EdgeConnection, Edge] = {}
        for edge in self.edges:
            dst = edge.destination
            if self.type_of(dst.node_id) == COLLECT and dst.field == ITEM_FIELD:
                continue
            if dst in seen:
                raise InvalidEdgeError(
                    f"edge {edge}: input {dst} already has an edge from {seen[dst].source}; "
                    "an input takes one edge (only collect.item takes many)",
                    node_id=dst.node_id, field=dst.field)
            seen[dst] = edge

    def _validate_acyclic(self) -> None:
        order = self.topological_order
        if len(order) != len(self.nodes):
            stuck = [n for n in self.nodes if n not in set(order)]
            raise CyclicalGraphError(f"graph contains a cycle through nodes: {', '.join(sorted(stuck))}",
                                     node_id=sorted(stuck)[0])

    def _validate_edge_types(self) -> None:
        for edge in self.edges:
            from_type, to_type = self.output_type(edge.source), self.input_type(edge.destination)
            if not are_connection_types_compatible(from_type, to_type):
                raise InvalidEdgeError(
                    f"edge {edge}: field {edge.destination.field} of node {edge.destination.node_id} "
                    f"({self.type_of(edge.destination.node_id)}) expects {type_name(to_type)}, but "
                    f"{edge.source} gives {type_name(from_type)}",
                    node_id=edge.destination.node_id, field=edge.destination.field)

    def _validate_special_nodes(self) -> None:
        for node_id, node in self.nodes.items():
            if node.get_type() == ITERATE:
                error = self.iterator_error(node_id)
                if error:
                    raise InvalidEdgeError(f"invalid iterator node {node_id}: {error}", node_id=node_id,
                                           field=COLLECTION_FIELD)
            elif node.get_type() == COLLECT:
                error = self.collector_error(node_id)
                if error:
                    raise InvalidEdgeError(f"invalid collector node {node_id}: {error}", node_id=node_id,
                                           field=ITEM_FIELD)

    def iterator_error(self, node_id: str) -> Optional[str]:
        inputs = [e.source for e in self.input_edges(node_id, COLLECTION_FIELD)]
        outputs = [e.destination for e in self.output_edges(node_id, ITEM_FIELD)]
        if not inputs:
            return "an iterator needs one edge into its collection input"
        if len(inputs) > 1:
            return "an iterator takes only one edge into its collection input"
        input_type = self.output_type(inputs[0])
        if get_origin(input_type) is not list:
            return f"its collection input must be a list, got {type_name(input_type)} from {inputs[0]}"
        item_type = get_args(input_type)[0] if get_args(input_type) else Any
        for out in outputs:
            if not are_connection_types_compatible(item_type, self.input_type(out)):
                return (f"its item ({type_name(item_type)}) cannot go to {out}, which expects "
                        f"{type_name(self.input_type(out))}")
        if self.type_of(inputs[0].node_id) == COLLECT:
            root = self.collector_root_type(inputs[0].node_id)
            if root is None:
                return f"its input collector {inputs[0].node_id} has no item or collection input edge"
            for out in outputs:
                if not are_connection_types_compatible(root, self.input_type(out)):
                    return (f"the collected items ({type_name(root)}) cannot go to {out}, which expects "
                            f"{type_name(self.input_type(out))}")
        return None

    def _collector_input_types(self, node_id: str, visited: Optional[set[str]] = None) -> set[Any]:
        visited = set() if visited is None else visited
        if node_id in visited:
            return set()
        visited.add(node_id)
        types: set[Any] = set()
        for edge in self.input_edges(node_id, ITEM_FIELD):
            types.update(single_item_types(self.output_type(edge.source)))
        for edge in self.input_edges(node_id, COLLECTION_FIELD):
            if self.type_of(edge.source.node_id) == COLLECT and edge.source.field == COLLECTION_FIELD:
                types.update(self._collector_input_types(edge.source.node_id, visited.copy()))
            else:
                types.update(collection_item_types(self.output_type(edge.source)))
        return types

    def collector_root_type(self, node_id: str) -> Any:
        """The single root item type a collector gathers; Any if mixed or untyped, None if it has no inputs."""
        types = self._collector_input_types(node_id)
        concrete = {t for t in types if t is not Any}
        if not concrete:
            return Any if Any in types else None
        roots = root_types(concrete)
        return roots[0] if len(roots) == 1 else Any

    def collector_error(self, node_id: str) -> Optional[str]:
        item_inputs = self.input_edges(node_id, ITEM_FIELD)
        collection_inputs = self.input_edges(node_id, COLLECTION_FIELD)
        outputs = [e.destination for e in self.output_edges(node_id, COLLECTION_FIELD)]
        if not item_inputs and not collection_inputs:
            return "a collector needs at least one edge into item or collection"
        for edge in collection_inputs:
            t = self.output_type(edge.source)
            if not (is_list_or_contains_list(t) or is_any(t)):
                return f"its collection input must be a list, got {type_name(t)} from {edge.source}"
        types: set[Any] = set()
        for edge in item_inputs:
            types.update(single_item_types(self.output_type(edge.source)))
        for edge in collection_inputs:
            if self.type_of(edge.source.node_id) == COLLECT and edge.source.field == COLLECTION_FIELD:
                types.update(self._collector_input_types(edge.source.node_id))
            else:
                types.update(collection_item_types(self.output_type(edge.source)))
        roots = root_types({t for t in types if t is not Any})
        if len(roots) > 1:
            names = ", ".join(sorted(type_name(t) for t in roots))
            return f"collected items must be of a single type, got {names}"
        root = roots[0] if roots else None
        for out in outputs:
            to_type = self.input_type(out)
            if not (is_list_or_contains_list(to_type) or is_any(to_type)):
                return f"its collection output must go to a list input, but {out} expects {type_name(to_type)}"
            if is_any(to_type):
                continue
            to_item = get_args(to_type)[0] if get_origin(to_type) is list else _first_list_item(to_type)
            if root is not None:
                if not collected_item_fits(root, to_item):
                    return (f"its items ({type_name(root)}) do not fit {out}, which expects "
                            f"{type_name(to_type)}")
            elif to_item is not Any:
                return f"its items have no known type, but {out} expects {type_name(to_type)}"
            if self.type_of(out.node_id) == COLLECT and out.field == COLLECTION_FIELD:
                downstream = self.collector_root_type(out.node_id)
                if downstream is not None and root is not None and not are_connection_types_compatible(root, downstream):
                    return f"its items ({type_name(root)}) do not match collector {out.node_id}"
        return None


def _first_list_item(t: Any) -> Any:
    for arg in get_args(t):
        if get_origin(arg) is list:
            args = get_args(arg)
            return args[0] if args else Any
    return Any


def load_json(text: str, source: str = "") -> Any:
    """json.loads with a message that says where the document is broken (in ``source``, a file, when given)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f" in {source}" if source else ""
        raise GraphParseError(f"malformed JSON{where} at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
