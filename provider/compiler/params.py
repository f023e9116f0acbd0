"""Workflow form fields and batch data → Airflow DAG Params (the trigger form, reference §1.6).

Each exposed field of a saved workflow becomes one Param whose JSON schema is derived from the node field's
annotation and constraints (`invokeai_provider.compiler.param_schema`), the workflow's 4.0 form settings and
the workflow's literal value (`invokeai_provider.compiler.param_values`); a model field lists the installed
models (`invokeai_provider.compiler.model_choices`). Each batch datum becomes an array Param in the "Batch"
section. Every compiled DAG also gets the ``tenant`` Param (`invokeai_provider.compiler.tenant_param`); an
exposed field that would be named ``tenant`` is named ``tenant_2`` instead.

Nothing heavy is imported here; Airflow is imported only inside :func:`airflow_params`.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional

from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from invokeai_provider.compiler.fed_constraints import apply_fed_constraints, passes_through
from invokeai_provider.compiler.model_choices import ModelNames
from invokeai_provider.compiler.param_check import schema_problem
from invokeai_provider.compiler.param_schema import (
    allow_null,
    apply_constraints,
    base_schema,
    fits,
    kind_of,
    unwrap,
)
from invokeai_provider.compiler.param_values import current_value, param_value
from invokeai_provider.errors import BatchItemsTypeError, NodeFieldNotFoundError, NodeNotFoundError, WorkflowError
from invokeai_provider.execution.tenants import TENANT_PARAM

if TYPE_CHECKING:
    from airflow.sdk import Param

    from invokeai_provider.core.invocation import BaseInvocation
    from invokeai_provider.graph.workflow import Document, FieldRef

__all__ = ["BATCH_SECTION", "KINDS", "ParamSpec", "airflow_params", "param_specs"]

BATCH_SECTION = "Batch"
KINDS = ("value", "model", "image", "board", "batch")


@dataclass(frozen=True)
class ParamSpec:
    """One trigger-form input: its Param name and schema, and the node input (or batch datum) it sets."""

    name: str
    node_id: Optional[str]
    field_name: Optional[str]
    schema: dict[str, Any] = field(hash=False)
    kind: str
    batch_index: Optional[tuple[int, int]] = None
    # For batch params: how each item is turned into a node value ("value", "image", "board", "model").
    item_kind: Optional[str] = None


# --- names and labels -----------------------------------------------------------------------------


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if slug and slug[0].isdigit():
        slug = f"p_{slug}"
    return slug


def _humanize(name: str) -> str:
    return " ".join(word[:1].upper() + word[1:] for word in name.split("_") if word)


def _field_title(info: FieldInfo, field_name: str) -> str:
    return info.title or _humanize(field_name)


def _type_title(node: "BaseInvocation") -> str:
    ui = getattr(type(node), "UIConfig", None)
    return (ui.title if ui is not None and ui.title else None) or _humanize(node.get_type())


class _Namer:
    """Hands out unique names: the first use of a base keeps it, later ones get _2, _3, ..."""

    def __init__(self, reserved: tuple[str, ...] = ()) -> None:
        self.used: set[str] = set(reserved)

    def __call__(self, base: str) -> str:
        base = base or "param"
        name, counter = base, 1
        while name in self.used:
            counter += 1
            name = f"{base}_{counter}"
        self.used.add(name)
        return name


# --- specs ----------------------------------------------------------------------------------------


def _settings(ref: "FieldRef") -> Optional[Mapping[str, Any]]:
    settings = ref.settings
    if settings is None:
        return None
    if not isinstance(settings, Mapping):
        raise WorkflowError(f"form settings for {ref.node_id}.{ref.field_name} must be an object",
                            node_id=ref.node_id, field=ref.field_name)
    return settings


def _is_prompt(node: "BaseInvocation", field_name: str, label: str, extra: Mapping[str, Any]) -> bool:
    if field_name == "prompt" or extra.get("ui_component") == "textarea":
        return True
    return node.get_type() == "string" and field_name == "value" and "prompt" in label.lower()


def _is_metadata_node(node: "BaseInvocation") -> bool:
    ui = getattr(type(node), "UIConfig", None)
    return ui is not None and ui.category == "metadata"


def _fed_fields(document: "Document", node_id: str, field_name: str) -> list[tuple["BaseInvocation", str]]:
    """The node inputs that output ``field_name`` feeds, in edge order with metadata nodes last: they say what a
    primitive's value is for, and metadata only records it."""
    graph = document.graph
    fed = [(graph.nodes[e.destination.node_id], e.destination.field) for e in graph.output_edges(node_id, field_name)
           if e.destination.node_id in graph.nodes]
    return sorted(fed, key=lambda item: _is_metadata_node(item[0]))


def _node_notes(document: "Document", node_id: str) -> str:
    if document.workflow is None:
        return ""
    for raw in document.workflow.raw.get("nodes", []):
        if isinstance(raw, Mapping) and str(raw.get("id")) == node_id:
            data = raw.get("data")
            return str(data.get("notes") or "").strip() if isinstance(data, Mapping) else ""
    return ""


def _help_text(document: "Document", ref: "FieldRef", node: "BaseInvocation", info: FieldInfo,
               primitive: bool) -> str:
    """The Param's help text, the workflow's own words first.

    The exposed field's description in the workflow wins. A primitive (string, integer, "Any Model") only
    says "The string value" of itself: its notes, then the description of the first field its output feeds
    (a prompt, the steps), come before that. Other nodes describe each input, so their notes (about the
    whole node) come only after the field's description.
    """
    if ref.description.strip():
        return ref.description.strip()
    notes = _node_notes(document, ref.node_id)
    if not primitive:
        return info.description or notes
    if notes:
        return notes
    for target, field_name in _fed_fields(document, ref.node_id, ref.field_name):
        fed = type(target).input_fields().get(field_name)
        if fed is not None and fed.description:
            return fed.description
    return info.description or ""


def _model_hints(node: "BaseInvocation", field_name: str) -> bool:
    info = type(node).input_fields().get(field_name)
    extra = info.json_schema_extra if info is not None and isinstance(info.json_schema_extra, dict) else {}
    return extra.get("ui_model_type") is not None or extra.get("ui_model_base") is not None


def _model_choices(document: "Document", ref: "FieldRef", node: "BaseInvocation",
                   model_names: ModelNames) -> list[str]:
    """Installed models the field takes. A field that takes any model ("Any Model") offers only those that
    every typed model field it feeds takes (the SD1.5 loader's main models, not LoRAs or VAEs)."""
    names = [str(n) for n in model_names(node.get_type(), ref.field_name) or []]
    if not _model_hints(node, ref.field_name):
        for target, field_name in _fed_fields(document, ref.node_id, ref.field_name):
            if _model_hints(target, field_name):
                allowed = {str(n) for n in model_names(target.get_type(), field_name) or []}
                names = [n for n in names if n in allowed]
    return list(dict.fromkeys(names))


def _empty_is_default(schema: Mapping[str, Any], kind: str, extra: Mapping[str, Any]) -> bool:
    """A text field whose node default is "" (a negative prompt): Airflow's form sends an emptied box as null
    and marks a string Param without "null" required, so the Param takes null too; a null value leaves the
    field unset, which gives the node's "" default."""
    return (kind == "value" and schema.get("type") == "string" and "enum" not in schema
            and not extra.get("orig_required") and extra.get("orig_default") == "")


def _value_spec(document: "Document", ref: "FieldRef", namer: _Namer,
                model_names: Optional[ModelNames], legacy: bool) -> ParamSpec:
    graph = document.graph
    node = graph.nodes.get(ref.node_id)
    if node is None:
        raise NodeNotFoundError(f"exposed field {ref.node_id}.{ref.field_name}: node {ref.node_id} is not in the graph",
                                node_id=ref.node_id, field=ref.field_name)
    node_class = type(node)
    inputs = node_class.input_fields()
    if ref.field_name not in inputs:
        raise NodeFieldNotFoundError(
            f"exposed field {ref.node_id}.{ref.field_name}: node {ref.node_id} ({node.get_type()}) has no input "
            f"{ref.field_name!r}", node_id=ref.node_id, field=ref.field_name)
    info = inputs[ref.field_name]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    settings = _settings(ref)
    has_value, value = current_value(document, node, ref.field_name, info)
    annotation = node_class.input_type(ref.field_name)
    if annotation is None:
        annotation = info.annotation
    inner, nullable = unwrap(annotation, value)
    kind = kind_of(inner)
    schema = base_schema(inner, info, ref.node_id, ref.field_name)
    apply_constraints(schema, info, settings, ref.node_id, ref.field_name)
    apply_fed_constraints(schema, graph, ref.node_id, ref.field_name)

    node_label = document.workflow.node_label(ref.node_id) if document.workflow is not None else ""
    field_title = _field_title(info, ref.field_name)
    single_input = len(inputs) == 1
    if ref.label:
        title, base_name = ref.label, _slug(ref.label)
    elif node_label:
        same = single_input or _slug(field_title) == _slug(node_label) or _slug(ref.field_name) == _slug(node_label)
        title = node_label if same else f"{node_label}: {field_title}"
        base_name = _slug(node_label) if same else f"{_slug(node_label)}_{_slug(ref.field_name)}"
    else:
        title, base_name = field_title, f"{_slug(node.get_type())}_{_slug(ref.field_name)}"
    schema["title"] = title
    description = _help_text(document, ref, node, info, passes_through(type(node), ref.field_name))
    if description and ref.show_description:
        schema["description"] = description
    section = ref.section if not legacy else (node_label or _type_title(node))
    if section:
        schema["section"] = section

    default = param_value(kind, value) if has_value else None
    if kind == "model" and model_names is not None and schema.get("type") == "string":
        names = _model_choices(document, ref, node, model_names)
        if names:
            if default not in (None, "") and default not in names:
                names.append(str(default))
            schema["enum"] = names
    if settings and schema.get("type") == "string" and "enum" not in schema:
        component = settings.get("component")
        if component == "textarea":
            schema["format"] = "multiline"
        elif component == "dropdown":
            options = settings.get("options") or []
            if not isinstance(options, list) or not all(isinstance(o, Mapping) and "value" in o for o in options):
                raise WorkflowError(f"form settings for {ref.node_id}.{ref.field_name}: dropdown options must be a list "
                                    'of {"label", "value"} objects', node_id=ref.node_id, field=ref.field_name)
            if options:
                values = [str(o["value"]) for o in options]
                display = {str(o["value"]): str(o.get("label") or o["value"]) for o in options}
                if isinstance(default, str) and default not in values:
                    values.append(default)
                    display[default] = default
                schema["enum"] = list(dict.fromkeys(values))
                schema["values_display"] = display
        elif component is None and _is_prompt(node, ref.field_name, ref.label or node_label, extra):
            schema["format"] = "multiline"
    elif schema.get("type") == "string" and "enum" not in schema and kind == "value" and \
            _is_prompt(node, ref.field_name, ref.label or node_label, extra):
        schema["format"] = "multiline"

    if default is not None:
        schema["default"] = default
        if nullable or kind == "board" or _empty_is_default(schema, kind, extra):
            allow_null(schema)
    elif not extra.get("orig_required") or kind == "board":
        allow_null(schema)
        schema["default"] = None
    return ParamSpec(name=namer(base_name), node_id=ref.node_id, field_name=ref.field_name, schema=schema, kind=kind)


def _batch_specs(document: "Document", namer: _Namer) -> list[ParamSpec]:
    batch = document.batch
    if batch is None or not batch.data:
        return []
    graph = document.graph
    specs: list[ParamSpec] = []
    for group_index, group in enumerate(batch.data):
        for datum_index, datum in enumerate(group):
            node = graph.nodes.get(datum.node_path)
            if node is None:
                raise NodeNotFoundError(f"batch data names node {datum.node_path} (field {datum.field_name}), which is "
                                        "not in the graph", node_id=datum.node_path, field=datum.field_name)
            inputs = type(node).input_fields()
            if datum.field_name not in inputs:
                raise NodeFieldNotFoundError(
                    f"batch data names field {datum.field_name!r}, which node {datum.node_path} ({node.get_type()}) "
                    "does not have", node_id=datum.node_path, field=datum.field_name)
            info = inputs[datum.field_name]
            raw_items = [to_jsonable_python(i) for i in datum.items]
            annotation = type(node).input_type(datum.field_name) or info.annotation
            inner, _ = unwrap(annotation, raw_items[0] if raw_items else None)
            item_kind = kind_of(inner)
            item_schema = base_schema(inner, info, datum.node_path, datum.field_name)
            apply_constraints(item_schema, info, None, datum.node_path, datum.field_name)
            apply_fed_constraints(item_schema, graph, datum.node_path, datum.field_name)
            items = [param_value(item_kind, i) for i in raw_items]
            for item in items:
                if not fits(item_schema, item):
                    raise BatchItemsTypeError(
                        f"batch data for {datum.node_path}.{datum.field_name}: item {json.dumps(item)[:80]} does not "
                        f"fit the field (expected {item_schema.get('type')})",
                        node_id=datum.node_path, field=datum.field_name)
                problem = schema_problem(item_schema, item)
                if problem:  # the trigger would refuse the document's own items as the Param's default
                    raise BatchItemsTypeError(f"batch data for {datum.node_path}.{datum.field_name}: item "
                                              f"{json.dumps(item)[:80]}: {problem}",
                                              node_id=datum.node_path, field=datum.field_name)
            label = document.workflow.node_label(datum.node_path) if document.workflow is not None else ""
            schema: dict[str, Any] = {
                "type": "array",
                "items": item_schema,
                "minItems": 1,  # an empty list would run no session (refused at the trigger, HTTP 400)
                "default": items,
                "title": f"{label or datum.node_path}.{datum.field_name} (batch)",
                "section": BATCH_SECTION,
            }
            zipped = [f"{d.node_path}.{d.field_name}" for d in group if d is not datum]
            description = f"One session per item, each setting {datum.node_path}.{datum.field_name}."
            if zipped:
                description += f" Zipped with {', '.join(zipped)}: give them the same number of items."
            schema["description"] = description
            base = f"{_slug(label or node.get_type())}_{_slug(datum.field_name)}_batch"
            specs.append(ParamSpec(name=namer(base), node_id=None, field_name=None, schema=schema, kind="batch",
                                   batch_index=(group_index, datum_index), item_kind=item_kind))
    return specs


def _is_legacy(document: "Document") -> bool:
    form = document.workflow.form if document.workflow is not None else None
    return not (isinstance(form, Mapping) and form.get("elements"))


def param_specs(document: "Document", *, model_names: Optional[ModelNames] = None) -> list[ParamSpec]:
    """The trigger-form inputs of a document: exposed fields in form order, then one per batch datum.

    ``model_names(node_type, field_name)`` lists the installed models a model field accepts; a non-empty
    list becomes the field's dropdown. Exposed fields that an edge feeds, and repeats of a field already
    exposed, are left out (a value there would be ignored).
    """
    namer = _Namer(reserved=(TENANT_PARAM,))
    specs: list[ParamSpec] = []
    if document.workflow is not None:
        legacy = _is_legacy(document)
        seen: set[tuple[str, str]] = set()
        for ref in document.workflow.exposed_fields:
            key = (ref.node_id, ref.field_name)
            if key in seen or document.graph.input_edges(ref.node_id, ref.field_name):
                continue
            seen.add(key)
            specs.append(_value_spec(document, ref, namer, model_names, legacy))
    specs.extend(_batch_specs(document, namer))
    return specs


# --- Airflow --------------------------------------------------------------------------------------


def airflow_params(specs: list[ParamSpec]) -> dict[str, "Param"]:
    """One ``airflow.sdk.Param`` per spec; a spec without a default makes a required Param."""
    from airflow.sdk import Param

    params: dict[str, Param] = {}
    for spec in specs:
        schema = copy.deepcopy(spec.schema)
        description = schema.pop("description", None)
        if "default" in schema:
            default = schema.pop("default")
            params[spec.name] = Param(default, description=description, **schema)
        else:
            params[spec.name] = Param(description=description, **schema)
    return params
