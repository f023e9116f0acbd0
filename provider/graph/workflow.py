"""Saved InvokeAI workflows (meta 3.0.0 and 4.0.0) and their conversion into graphs (reference §2.6).

The conversion follows InvokeAI's frontend: invocation nodes only, literal values taken from each input's
``value``, connector (reroute) nodes flattened, only ``default`` edges kept, duplicates dropped, and any
literal removed where an edge arrives. Batch nodes are not executable: they become batch data (§2.5).
The workflow's exposed fields and form tree are kept for the DAG's trigger form.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

from invokeai_provider.core.aliases import current_field_name
from invokeai_provider.errors import GraphParseError, NodeFieldNotFoundError, NodeNotFoundError, WorkflowError
from invokeai_provider.graph.graph import Graph, load_json

if TYPE_CHECKING:
    from invokeai_provider.graph.batch import Batch

SUPPORTED_META_VERSIONS = ("3.0.0", "4.0.0")

# Batch nodes hold lists that become per-session values; generator nodes compute such lists in the UI.
BATCH_NODE_LIST_FIELDS = {
    "image_batch": "images",
    "string_batch": "strings",
    "integer_batch": "integers",
    "float_batch": "floats",
}
GENERATOR_NODE_TYPES = ("image_generator", "string_generator", "integer_generator", "float_generator")
BOARD_SENTINELS = ("auto", "none")


@dataclass(frozen=True)
class FieldRef:
    """One exposed field: which node input the trigger form sets, and how it is presented."""

    node_id: str
    field_name: str
    label: str = ""
    description: str = ""
    settings: Optional[dict[str, Any]] = None
    show_description: bool = True
    section: Optional[str] = None  # heading of the form section the field sits under


@dataclass
class Workflow:
    """A parsed saved workflow: metadata, the graph it converts to, and its form."""

    raw: dict[str, Any]
    graph: Graph
    exposed_fields: list[FieldRef] = field(default_factory=list)
    batch_data: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.raw.get("name") or "")

    @property
    def description(self) -> str:
        return str(self.raw.get("description") or "")

    @property
    def notes(self) -> str:
        return str(self.raw.get("notes") or "")

    @property
    def meta_version(self) -> str:
        return str(self.raw.get("meta", {}).get("version", ""))

    @property
    def form(self) -> Optional[dict[str, Any]]:
        return self.raw.get("form")

    def node_label(self, node_id: str) -> str:
        node = _nodes_by_id(self.raw).get(node_id, {})
        return str(node.get("data", {}).get("label") or "")


def is_workflow(document: Any) -> bool:
    """Workflows have a list of nodes and a ``meta`` block; graphs have a dict of nodes."""
    return isinstance(document, Mapping) and isinstance(document.get("nodes"), list) and "meta" in document


def _nodes_by_id(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(n.get("id")): n for n in raw.get("nodes", []) if isinstance(n, Mapping)}


def _invocation_type(node: Mapping[str, Any]) -> Optional[str]:
    return node.get("data", {}).get("type") if node.get("type") == "invocation" else None


def _is_batch_special(node_type: Optional[str]) -> bool:
    return node_type in BATCH_NODE_LIST_FIELDS or node_type in GENERATOR_NODE_TYPES


def parse_workflow(raw: Any) -> Workflow:
    """Converts a saved workflow into a graph plus its form; errors name the node and field."""
    if not is_workflow(raw):
        raise GraphParseError('not a saved workflow: expected "nodes" as a list and a "meta" block')
    version = str(raw.get("meta", {}).get("version", ""))
    if version not in SUPPORTED_META_VERSIONS:
        raise WorkflowError(
            f"workflow meta.version {version!r} is not supported; expected one of {', '.join(SUPPORTED_META_VERSIONS)} "
            "(open and save it in a current InvokeAI to migrate it)", field="meta.version")
    nodes = _nodes_by_id(raw)
    for key, node in nodes.items():
        data = node.get("data")
        if node.get("type") == "invocation" and not isinstance(data, Mapping):
            raise WorkflowError(f'workflow node {key}: invocation node without a "data" object', node_id=key)
    invocations = {k: n for k, n in nodes.items() if _invocation_type(n) and not _is_batch_special(_invocation_type(n))}
    returns = [k for k, n in invocations.items() if _invocation_type(n) == "workflow_return"]
    if len(returns) > 1:
        raise WorkflowError(f"a workflow may have at most one workflow_return node, found {len(returns)}: {returns}",
                            node_id=returns[1])

    edges = _flatten_edges(raw, nodes, invocations)
    fed = {(e["destination"]["node_id"], e["destination"]["field"]) for e in edges}
    graph_nodes: dict[str, dict[str, Any]] = {}
    for node_id, node in invocations.items():
        data = node["data"]
        values: dict[str, Any] = {"id": node_id, "type": data["type"]}
        inputs = data.get("inputs") or {}
        if not isinstance(inputs, Mapping):
            raise WorkflowError(f"workflow node {node_id}: inputs must be an object", node_id=node_id, field="inputs")
        for name, spec in inputs.items():
            if not isinstance(spec, Mapping) or "value" not in spec or (node_id, name) in fed:
                continue
            value = spec["value"]
            if name == "board" and (value in BOARD_SENTINELS or value is None):
                continue
            values[name] = value
        values["use_cache"] = bool(data.get("useCache", True))
        values["is_intermediate"] = bool(data.get("isIntermediate", False))
        graph_nodes[node_id] = values

    graph_id = str(raw.get("id") or uuid.uuid5(uuid.NAMESPACE_URL, hashlib.sha256(
        json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()))
    graph = Graph.from_dict({"id": graph_id, "nodes": graph_nodes, "edges": edges})
    workflow = Workflow(raw=dict(raw), graph=graph)
    workflow.exposed_fields = _form_fields(raw, graph)
    workflow.batch_data = _batch_data(raw, nodes, invocations)
    return workflow


def _flatten_edges(raw: Mapping[str, Any], nodes: dict[str, dict[str, Any]],
                   invocations: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Default edges into invocations, with connector chains replaced by their real upstream source."""
    raw_edges = [e for e in raw.get("edges", []) if isinstance(e, Mapping)]
    into_connector = {str(e.get("target")): e for e in raw_edges if e.get("type", "default") == "default"
                      and nodes.get(str(e.get("target")), {}).get("type") == "connector"}
    result: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str, str]] = set()
    for edge in raw_edges:
        if edge.get("type", "default") != "default":
            continue
        target = str(edge.get("target"))
        if target not in invocations:
            continue
        source, handle = str(edge.get("source")), edge.get("sourceHandle")
        hops = 0
        while nodes.get(source, {}).get("type") == "connector":
            upstream = into_connector.get(source)
            if upstream is None:
                raise WorkflowError(f"connector node {source} has no input edge, so {target}.{edge.get('targetHandle')} "
                                    "gets no value", node_id=target, field=edge.get("targetHandle"))
            source, handle = str(upstream.get("source")), upstream.get("sourceHandle")
            hops += 1
            if hops > len(nodes):
                raise WorkflowError(f"connector nodes form a loop before {target}", node_id=target)
        if source not in nodes:
            raise NodeNotFoundError(f"workflow edge into {target}.{edge.get('targetHandle')} comes from missing node "
                                    f"{source}", node_id=source)
        if _is_batch_special(_invocation_type(nodes[source])):
            continue  # becomes batch data
        key = (source, str(handle), target, str(edge.get("targetHandle")))
        if key in seen:
            continue
        seen.add(key)
        if not handle or not edge.get("targetHandle"):
            raise WorkflowError(f"workflow edge {source} -> {target} has no sourceHandle/targetHandle", node_id=target)
        result.append({"source": {"node_id": source, "field": handle},
                       "destination": {"node_id": target, "field": edge["targetHandle"]}})
    return result


def _walk_form(form: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], Optional[str]]]:
    """Form elements depth-first from the root, with the heading in force for each one."""
    elements = form.get("elements") or {}
    root_id = form.get("rootElementId")
    if root_id not in elements:
        raise WorkflowError(f"workflow form: root element {root_id!r} does not exist", field="form.rootElementId")
    if elements[root_id].get("type") != "container":
        raise WorkflowError("workflow form: the root element must be a container", field="form.rootElementId")
    heading: list[Optional[str]] = [None]
    visited: set[str] = set()

    def walk(element_id: str) -> Iterator[tuple[dict[str, Any], Optional[str]]]:
        if element_id in visited:
            raise WorkflowError(f"workflow form: element {element_id} appears twice in the tree", field="form.elements")
        visited.add(element_id)
        element = elements.get(element_id)
        if element is None:
            raise WorkflowError(f"workflow form: child {element_id!r} does not exist", field="form.elements")
        if element.get("type") == "heading":
            heading[0] = str(element.get("data", {}).get("content") or "")
        yield element, heading[0]
        for child in element.get("data", {}).get("children", []) if element.get("type") == "container" else []:
            if elements.get(child, {}).get("parentId") not in (None, element_id):
                raise WorkflowError(f"workflow form: element {child} names another parent", field="form.elements")
            yield from walk(child)

    yield from walk(root_id)


def _form_fields(raw: Mapping[str, Any], graph: Graph) -> list[FieldRef]:
    """The trigger-form fields: from the 4.0 form tree when present, else the legacy exposedFields list."""
    nodes = _nodes_by_id(raw)
    refs: list[FieldRef] = []
    form = raw.get("form")
    if isinstance(form, Mapping) and form.get("elements"):
        for element, section in _walk_form(form):
            if element.get("type") != "node-field":
                continue
            data = element.get("data", {})
            ident = data.get("fieldIdentifier", {})
            refs.append(_field_ref(nodes, graph, str(ident.get("nodeId")), str(ident.get("fieldName")),
                                   settings=data.get("settings"), show_description=bool(data.get("showDescription", True)),
                                   section=section))
    else:
        for exposed in raw.get("exposedFields") or []:
            refs.append(_field_ref(nodes, graph, str(exposed.get("nodeId")), str(exposed.get("fieldName"))))
    return [ref for ref in refs if ref is not None]


def _field_ref(nodes: dict[str, dict[str, Any]], graph: Graph, node_id: str, field_name: str,
               **extra: Any) -> Optional[FieldRef]:
    """The form field, or None for a field of an old node type that its current node dropped."""
    if node_id not in graph.nodes:
        raise NodeNotFoundError(f"exposed field {node_id}.{field_name}: node {node_id} is not an invocation in this "
                                "workflow", node_id=node_id, field=field_name)
    old_name, field_name = field_name, current_field_name(nodes[node_id]["data"].get("type"), field_name)
    if field_name is None:
        return None
    if field_name not in type(graph.nodes[node_id]).input_fields():
        raise NodeFieldNotFoundError(
            f"exposed field {node_id}.{field_name}: node {node_id} ({graph.type_of(node_id)}) has no input "
            f"{field_name!r}", node_id=node_id, field=field_name)
    spec = nodes[node_id]["data"].get("inputs", {}).get(old_name, {})
    return FieldRef(node_id, field_name, label=str(spec.get("label") or ""),
                    description=str(spec.get("description") or ""), **extra)


def _batch_data(raw: Mapping[str, Any], nodes: dict[str, dict[str, Any]],
                invocations: dict[str, dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Batch nodes → batch data: same ``batch_group_id`` zipped into one group, group "None" each its own."""
    groups: dict[str, list[dict[str, Any]]] = {}
    singles: list[list[dict[str, Any]]] = []
    for node_id, node in nodes.items():
        node_type = _invocation_type(node)
        if node_type in GENERATOR_NODE_TYPES:
            consumers = [e for e in raw.get("edges", []) if e.get("source") == node_id and e.get("type") == "default"]
            if consumers:
                raise WorkflowError(
                    f"workflow node {node_id} ({node_type}): generator nodes are computed by InvokeAI's UI and are not "
                    "supported here; replace it with a batch node holding the generated list", node_id=node_id)
            continue
        if node_type not in BATCH_NODE_LIST_FIELDS:
            continue
        inputs = node["data"].get("inputs", {})
        list_field = BATCH_NODE_LIST_FIELDS[node_type]
        items = inputs.get(list_field, {}).get("value") or []
        data = [{"node_path": str(e["target"]), "field_name": name, "items": list(items)}
                for e in raw.get("edges", [])
                if e.get("source") == node_id and e.get("type", "default") == "default" and str(e.get("target")) in invocations
                and (name := current_field_name(_invocation_type(invocations[str(e["target"])]),
                                                str(e["targetHandle"]))) is not None]
        if not data:
            continue
        group = str(inputs.get("batch_group_id", {}).get("value") or "None")
        if group == "None":
            singles.append(data)
        else:
            groups.setdefault(group, []).extend(data)
    return [groups[g] for g in sorted(groups)] + singles


@dataclass
class Document:
    """What a JSON file holds: a graph, the workflow it came from (if any) and batch data (if any)."""

    graph: Graph
    workflow: Optional[Workflow] = None
    batch: Optional["Batch"] = None


def load_document(text: str, source: str = "") -> Document:
    """Parses a graph, a saved workflow or an InvokeAI batch (``{"batch": {"graph", "data", "runs"}}``).

    The kind is detected from the document's shape. A workflow's batch nodes and a batch's ``data``
    become the document's batch. ``source`` (the file it came from) is named when the JSON is malformed.
    """
    from invokeai_provider.graph.batch import Batch

    document = load_json(text, source)
    if is_workflow(document):
        workflow = parse_workflow(document)
        batch = Batch.model_validate({"data": workflow.batch_data}) if workflow.batch_data else None
        return Document(workflow.graph, workflow, batch)
    if isinstance(document, Mapping) and isinstance(document.get("batch"), Mapping):
        document = document["batch"]  # InvokeAI's enqueue_batch body
    if isinstance(document, Mapping) and "graph" in document and "nodes" not in document:
        batch_fields = {k: document[k] for k in ("batch_id", "origin", "destination", "data", "runs") if k in document}
        graph = Graph.from_dict(document["graph"])
        workflow = parse_workflow(document["workflow"]) if is_workflow(document.get("workflow")) else None
        return Document(graph, workflow, Batch.model_validate(batch_fields) if batch_fields else None)
    return Document(Graph.from_dict(document))
