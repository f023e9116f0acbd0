"""Workflow form fields and batch data → Airflow DAG Params (the trigger form, reference §1.6).

Each exposed field of a saved workflow becomes one Param whose JSON schema uses the keys Airflow 3.3's
trigger form renders (type, enum + values_display, format, minimum/maximum, section, ...). The schema is
derived from the node field's annotation and constraints, the workflow's 4.0 form settings and the
workflow's literal value. Each batch datum becomes an array Param in the "Batch" section. Every compiled
DAG also gets the ``tenant`` Param (section "Run"): its storage prefix, validated by Airflow before a run
exists; an exposed field that would be named ``tenant`` is named ``tenant_2`` instead.

Nothing heavy is imported here; Airflow is imported only inside :func:`airflow_params`.
"""

from __future__ import annotations

import copy
import enum
import json
import re
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from invokeai_provider.errors import BatchItemsTypeError, NodeFieldNotFoundError, NodeNotFoundError, WorkflowError
from invokeai_provider.core.fields import BoardField, ImageField, ModelIdentifierField
from invokeai_provider.execution.tenants import ARTIFACT_NAME_PATTERN, TENANT_PARAM, TENANT_PATTERN, TENANT_RULE, check_tenant

if TYPE_CHECKING:
    from airflow.sdk import Param

    from invokeai_provider.core.invocation import BaseInvocation
    from invokeai_provider.graph.workflow import Document, FieldRef

__all__ = [
    "BATCH_SECTION",
    "RUN_SECTION",
    "ParamSpec",
    "airflow_params",
    "model_names_from_registry",
    "param_specs",
    "scheduler_label",
    "tenant_param",
    "tenant_schema",
    "to_node_value",
    "workflow_doc_md",
]

BATCH_SECTION = "Batch"
RUN_SECTION = "Run"
KINDS = ("value", "model", "image", "board", "batch")
_BOARD_NONE = (None, "", "none", "auto")

ModelNames = Callable[[str, str], list[str]]


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


# --- names and labels -------------------------------------------------------------------------------


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


_SCHEDULER_WORDS = {
    "ddim": "DDIM", "ddpm": "DDPM", "deis": "DEIS", "lms": "LMS", "pndm": "PNDM", "heun": "Heun", "euler": "Euler",
    "kdpm": "KDPM", "dpmpp": "DPM++", "er": "ER", "sde": "SDE", "unipc": "UniPC", "lcm": "LCM", "tcd": "TCD",
    "a": "Ancestral", "k": "Karras",
}


def scheduler_label(name: str) -> str:
    """A readable label for a scheduler name: ``dpmpp_2m_sde_k`` → ``DPM++ 2M SDE Karras``."""
    return " ".join(_SCHEDULER_WORDS.get(word, word.upper()) for word in name.split("_") if word)


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


# --- annotations → schema ---------------------------------------------------------------------------


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> Optional[list[Any]]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return None


def _unwrap(annotation: Any, value: Any) -> tuple[Any, bool]:
    """The one annotation a form field edits, and whether None is allowed.

    ``Optional[T]`` gives T; ``Union[T, list[T]]`` gives T unless the current value is a list. Other unions
    stay unions (mapped to a multi-type schema).
    """
    annotation = _strip_annotated(annotation)
    members = _union_members(annotation)
    if members is None:
        return annotation, annotation is type(None)
    nullable = type(None) in members
    members = [_strip_annotated(m) for m in members if m is not type(None)]
    if len(members) == 1:
        inner, inner_nullable = _unwrap(members[0], value)
        return inner, nullable or inner_nullable
    scalars = [m for m in members if typing.get_origin(m) is not list]
    lists = [m for m in members if typing.get_origin(m) is list]
    if len(scalars) == 1 and len(lists) == 1 and typing.get_args(lists[0]) and \
            _strip_annotated(typing.get_args(lists[0])[0]) == scalars[0]:
        return (lists[0] if isinstance(value, list) else scalars[0]), nullable
    return typing.Union[tuple(members)], nullable  # type: ignore[return-value]


def _is_subclass(annotation: Any, parent: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, parent)


def _kind_of(annotation: Any) -> str:
    """"model", "image", "board" or "value" for a (possibly list-wrapped) annotation."""
    if typing.get_origin(annotation) in (list, tuple, set, frozenset):
        args = typing.get_args(annotation)
        return _kind_of(_unwrap(args[0], None)[0]) if args else "value"
    if _is_subclass(annotation, ModelIdentifierField):
        return "model"
    if _is_subclass(annotation, ImageField):
        return "image"
    if _is_subclass(annotation, BoardField):
        return "board"
    return "value"


def _object_schema(annotation: Any) -> dict[str, Any]:
    """A pydantic model's own schema when it is self-contained, else just ``type: object``."""
    schema: dict[str, Any] = {"type": "object"}
    if _is_subclass(annotation, BaseModel):
        try:
            model_schema = annotation.model_json_schema()
        except Exception:  # noqa: BLE001 - a type pydantic cannot describe still gets the JSON editor
            return schema
        if model_schema.get("type") == "object" and "$defs" not in model_schema and "properties" in model_schema:
            schema["properties"] = {k: {kk: vv for kk, vv in v.items() if kk != "title"}
                                    for k, v in model_schema["properties"].items()}
            if model_schema.get("required"):
                schema["required"] = list(model_schema["required"])
    return schema


def _base_schema(annotation: Any, info: Optional[FieldInfo], node_id: str, field_name: str) -> dict[str, Any]:
    """Type (and enum/items) of a non-null annotation; constraints are added separately."""
    extra = info.json_schema_extra if info is not None and isinstance(info.json_schema_extra, dict) else {}
    origin = typing.get_origin(annotation)
    if annotation is Any or annotation is None:
        return {}
    if origin is typing.Literal:
        values = [v.value if isinstance(v, enum.Enum) else v for v in typing.get_args(annotation)]
        schema: dict[str, Any] = {"type": _json_type_of_values(values), "enum": values}
        labels = extra.get("ui_choice_labels")
        if isinstance(labels, Mapping):
            schema["values_display"] = {str(v): str(labels.get(v, v)) for v in values}
        elif extra.get("ui_type") == "SchedulerField":
            schema["values_display"] = {str(v): scheduler_label(str(v)) for v in values}
        return schema
    if _is_subclass(annotation, enum.Enum):
        values = [m.value for m in annotation]
        return {"type": _json_type_of_values(values), "enum": values}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if annotation is str:
        return {"type": "string"}
    if _is_subclass(annotation, ModelIdentifierField):
        return {"type": "string"}
    if _is_subclass(annotation, ImageField):  # a name in the run's store: never a path, URI or other tenant's key
        return {"type": "string", "pattern": ARTIFACT_NAME_PATTERN}
    if _is_subclass(annotation, BoardField):
        return {"type": "string"}
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(annotation)
        schema = {"type": "array"}
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            args = ()  # a fixed-length tuple: items of mixed types, left to the JSON editor
        if args:
            item, _ = _unwrap(args[0], None)
            items = _base_schema(item, None, node_id, field_name)
            if items:
                schema["items"] = items
        return schema
    members = _union_members(annotation)
    if members:
        kinds: list[str] = []
        for member in members:
            member_type = _base_schema(member, None, node_id, field_name).get("type")
            for t in member_type if isinstance(member_type, list) else [member_type]:
                if t is None:
                    return {}
                if t not in kinds:
                    kinds.append(t)
        if "integer" in kinds and "number" in kinds:
            kinds.remove("integer")
        return {"type": kinds[0] if len(kinds) == 1 else kinds}
    if origin in (dict, Mapping) or annotation is dict or _is_subclass(annotation, BaseModel):
        return _object_schema(annotation)
    return {"type": "object"}


def _json_type_of_values(values: list[Any]) -> Any:
    kinds: list[str] = []
    for value in values:
        kind = ("boolean" if isinstance(value, bool) else "integer" if isinstance(value, int)
                else "number" if isinstance(value, float) else "null" if value is None else "string")
        if kind not in kinds:
            kinds.append(kind)
    if "integer" in kinds and "number" in kinds:
        kinds.remove("integer")
    return kinds[0] if len(kinds) == 1 else kinds


def _bound(current: Optional[tuple[float, bool]], new: Optional[tuple[float, bool]], lower: bool
           ) -> Optional[tuple[float, bool]]:
    """The tighter of two bounds (value, exclusive); at equal values an exclusive bound is tighter."""
    if new is None:
        return current
    if current is None:
        return new
    if new[0] == current[0]:
        return (new[0], new[1] or current[1])
    return new if (new[0] > current[0]) == lower else current


def _number(value: Any, integer: bool) -> Any:
    if integer and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _apply_constraints(schema: dict[str, Any], info: FieldInfo, settings: Optional[Mapping[str, Any]],
                       node_id: str, field_name: str) -> None:
    """Bounds, lengths, pattern and multipleOf from the field, tightened by 4.0 form settings."""
    target = schema["items"] if schema.get("type") == "array" and isinstance(schema.get("items"), dict) else schema
    target_type = target.get("type")
    numeric = target_type in ("integer", "number")
    lower: Optional[tuple[float, bool]] = None
    upper: Optional[tuple[float, bool]] = None
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    multiple_of = extra.get("multiple_of")
    for meta in info.metadata:
        for attr, is_lower, exclusive in (("ge", True, False), ("gt", True, True), ("le", False, False),
                                          ("lt", False, True)):
            value = getattr(meta, attr, None)
            if value is not None and numeric:
                if is_lower:
                    lower = _bound(lower, (value, exclusive), True)
                else:
                    upper = _bound(upper, (value, exclusive), False)
        if getattr(meta, "multiple_of", None) is not None:
            multiple_of = meta.multiple_of
        for attr in ("min_length", "max_length"):
            value = getattr(meta, attr, None)
            if value is None:
                continue
            if schema.get("type") == "array":
                schema["minItems" if attr == "min_length" else "maxItems"] = value
            elif target_type == "string":
                target["minLength" if attr == "min_length" else "maxLength"] = value
        pattern = getattr(meta, "pattern", None)
        if isinstance(pattern, str) and target_type == "string":
            target["pattern"] = pattern
    if settings and numeric:
        for key, is_lower in (("min", True), ("max", False)):
            if settings.get(key) is None:
                continue
            value = settings[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise WorkflowError(f"form settings for {node_id}.{field_name}: {key} must be a number, got {value!r}",
                                    node_id=node_id, field=field_name)
            if is_lower:
                lower = _bound(lower, (value, False), True)
            else:
                upper = _bound(upper, (value, False), False)
    if lower is not None and upper is not None and (lower[0] > upper[0] or
                                                    (lower[0] == upper[0] and (lower[1] or upper[1]))):
        raise WorkflowError(f"field {node_id}.{field_name}: no value fits between the lower bound {lower[0]} and the "
                            f"upper bound {upper[0]} (from the field and its form settings)",
                            node_id=node_id, field=field_name)
    integer = target_type == "integer"
    if lower is not None:
        target["exclusiveMinimum" if lower[1] else "minimum"] = _number(lower[0], integer)
    if upper is not None:
        target["exclusiveMaximum" if upper[1] else "maximum"] = _number(upper[0], integer)
    if multiple_of is not None and numeric:
        target["multipleOf"] = _number(multiple_of, integer)


def _allow_null(schema: dict[str, Any]) -> None:
    if "type" not in schema:
        return
    types_ = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if "null" not in types_:
        schema["type"] = [*types_, "null"]
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]


# --- values -----------------------------------------------------------------------------------------


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


def _current_value(document: "Document", node: "BaseInvocation", field_name: str, info: FieldInfo
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


def _param_value(kind: str, value: Any) -> Any:
    """A node field value (JSON) as the form shows it: names for models, images and boards."""
    if isinstance(value, list) and kind in ("model", "image"):
        return [_param_value(kind, v) for v in value]
    if kind == "model" and isinstance(value, Mapping):
        return value.get("name") or value.get("key")
    if kind == "image" and isinstance(value, Mapping):
        return value.get("image_name")
    if kind == "board":
        if isinstance(value, Mapping):
            value = value.get("board_id")
        return None if value in _BOARD_NONE else value
    return value


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


# --- specs ------------------------------------------------------------------------------------------


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
    has_value, value = _current_value(document, node, ref.field_name, info)
    annotation = node_class.input_type(ref.field_name)
    if annotation is None:
        annotation = info.annotation
    inner, nullable = _unwrap(annotation, value)
    kind = _kind_of(inner)
    schema = _base_schema(inner, info, ref.node_id, ref.field_name)
    _apply_constraints(schema, info, settings, ref.node_id, ref.field_name)

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
    description = ref.description or info.description or ""
    if description and ref.show_description:
        schema["description"] = description
    section = ref.section if not legacy else (node_label or _type_title(node))
    if section:
        schema["section"] = section

    default = _param_value(kind, value) if has_value else None
    if kind == "model" and model_names is not None and schema.get("type") == "string":
        names = list(dict.fromkeys(str(n) for n in model_names(node.get_type(), ref.field_name) or []))
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
        if nullable or kind == "board":
            _allow_null(schema)
    elif not extra.get("orig_required") or kind == "board":
        _allow_null(schema)
        schema["default"] = None
    return ParamSpec(name=namer(base_name), node_id=ref.node_id, field_name=ref.field_name, schema=schema, kind=kind)


def _fits(schema: Mapping[str, Any], item: Any) -> bool:
    kinds = schema.get("type")
    if kinds is None:
        return True
    kinds = kinds if isinstance(kinds, list) else [kinds]
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, Mapping),
        "null": lambda v: v is None,
    }
    return any(checks.get(k, lambda v: True)(item) for k in kinds)


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
            inner, _ = _unwrap(annotation, raw_items[0] if raw_items else None)
            item_kind = _kind_of(inner)
            item_schema = _base_schema(inner, info, datum.node_path, datum.field_name)
            _apply_constraints(item_schema, info, None, datum.node_path, datum.field_name)
            items = [_param_value(item_kind, i) for i in raw_items]
            for item in items:
                if not _fits(item_schema, item):
                    raise BatchItemsTypeError(
                        f"batch data for {datum.node_path}.{datum.field_name}: item {json.dumps(item)[:80]} does not "
                        f"fit the field (expected {item_schema.get('type')})",
                        node_id=datum.node_path, field=datum.field_name)
            label = document.workflow.node_label(datum.node_path) if document.workflow is not None else ""
            schema: dict[str, Any] = {
                "type": "array",
                "items": item_schema,
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


# --- Airflow ----------------------------------------------------------------------------------------


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


def tenant_schema(default: str) -> dict[str, Any]:
    """The ``tenant`` Param's JSON schema (with its default), so the form and REST conf are checked by
    Airflow before a run exists. The default is checked too: a bad ``[invokeai] default_tenant`` fails
    DAG parsing with a message naming the option, not every run."""
    return {
        "default": check_tenant(default, field="[invokeai] default_tenant"),
        "type": "string",
        "pattern": TENANT_PATTERN,
        "minLength": 1,
        "maxLength": 63,
        "title": "Tenant",
        "description": f"Storage prefix of this run's images, tensors and usage records (<tenant>/...): {TENANT_RULE}.",
        "section": RUN_SECTION,
    }


def tenant_param(default: Optional[str] = None) -> "Param":
    """The ``tenant`` Param of a compiled DAG; ``default`` falls back to ``[invokeai] default_tenant``."""
    from airflow.sdk import Param

    if default is None:
        from invokeai_provider.config import get_option

        default = get_option("default_tenant") or "default"
    schema = tenant_schema(default)
    return Param(schema.pop("default"), description=schema.pop("description"), **schema)


# --- documentation ----------------------------------------------------------------------------------


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _shown_default(schema: Mapping[str, Any]) -> str:
    if "default" not in schema:
        return "*(required)*"
    text = json.dumps(schema["default"], ensure_ascii=False)
    return f"`{text if len(text) <= 60 else text[:57] + '...'}`".replace("|", "\\|")


def workflow_doc_md(document: "Document", specs: list[ParamSpec]) -> str:
    """Markdown for the DAG's doc_md: the workflow's name, description and notes, and its form inputs."""
    workflow = document.workflow
    lines: list[str] = []
    if workflow is not None:
        lines.append(f"# {workflow.name or 'InvokeAI workflow'}")
        details = [f"{k}: {_cell(workflow.raw[k])}" for k in ("author", "version") if workflow.raw.get(k)]
        if details:
            lines += ["", " · ".join(details)]
        if workflow.description:
            lines += ["", workflow.description]
        if workflow.notes:
            lines += ["", "## Notes", "", workflow.notes]
    else:
        lines.append("# InvokeAI graph")
        lines += ["", f"A graph of {len(document.graph.nodes)} nodes."]
    lines += ["", "## Inputs", ""]
    if not specs:
        lines.append("This DAG has no form inputs.")
        return "\n".join(lines) + "\n"
    lines += ["| Input | Param | Node | Field | Default |", "| --- | --- | --- | --- | --- |"]
    for spec in specs:
        node_id, field_name = spec.node_id, spec.field_name
        if spec.kind == "batch" and spec.batch_index is not None and document.batch is not None:
            datum = document.batch.data[spec.batch_index[0]][spec.batch_index[1]]  # type: ignore[index]
            node_id, field_name = datum.node_path, datum.field_name
        node = document.graph.nodes.get(node_id or "")
        label = workflow.node_label(node_id) if workflow is not None and node_id else ""
        node_text = f"{label or node_id} (`{node.get_type()}`)" if node is not None else str(node_id)
        lines.append(f"| {_cell(spec.schema.get('title', spec.name))} | `{spec.name}` | {_cell(node_text)} | "
                     f"`{field_name}` | {_shown_default(spec.schema)} |")
    return "\n".join(lines) + "\n"
