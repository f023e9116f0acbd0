"""A node field's annotation and constraints → the JSON schema of its trigger-form Param.

The schema uses the keys Airflow 3.3's trigger form renders (type, enum + values_display, format,
minimum/maximum, ...): :func:`base_schema` maps the annotation, :func:`apply_constraints` adds the field's
bounds, lengths and pattern tightened by the workflow's 4.0 form settings, :func:`fits` checks a value
against the result.
"""

from __future__ import annotations

import enum
import math
import types
import typing
from typing import Any, Mapping, Optional

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from invokeai_provider.core.fields import BoardField, ImageField, ModelIdentifierField
from invokeai_provider.errors import WorkflowError
from invokeai_provider.execution.tenants import ARTIFACT_NAME_PATTERN

__all__ = ["allow_null", "apply_constraints", "base_schema", "fits", "kind_of", "scheduler_label", "unwrap"]


_SCHEDULER_WORDS = {
    "ddim": "DDIM", "ddpm": "DDPM", "deis": "DEIS", "lms": "LMS", "pndm": "PNDM", "heun": "Heun", "euler": "Euler",
    "kdpm": "KDPM", "dpmpp": "DPM++", "er": "ER", "sde": "SDE", "unipc": "UniPC", "lcm": "LCM", "tcd": "TCD",
    "a": "Ancestral", "k": "Karras",
}


def scheduler_label(name: str) -> str:
    """A readable label for a scheduler name: ``dpmpp_2m_sde_k`` → ``DPM++ 2M SDE Karras``."""
    return " ".join(_SCHEDULER_WORDS.get(word, word.upper()) for word in name.split("_") if word)


# --- annotations ----------------------------------------------------------------------------------


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> Optional[list[Any]]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return None


def unwrap(annotation: Any, value: Any) -> tuple[Any, bool]:
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
        inner, inner_nullable = unwrap(members[0], value)
        return inner, nullable or inner_nullable
    scalars = [m for m in members if typing.get_origin(m) is not list]
    lists = [m for m in members if typing.get_origin(m) is list]
    if len(scalars) == 1 and len(lists) == 1 and typing.get_args(lists[0]) and \
            _strip_annotated(typing.get_args(lists[0])[0]) == scalars[0]:
        return (lists[0] if isinstance(value, list) else scalars[0]), nullable
    return typing.Union[tuple(members)], nullable  # type: ignore[return-value]


def _is_subclass(annotation: Any, parent: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, parent)


def kind_of(annotation: Any) -> str:
    """"model", "image", "board" or "value" for a (possibly list-wrapped) annotation."""
    if typing.get_origin(annotation) in (list, tuple, set, frozenset):
        args = typing.get_args(annotation)
        return kind_of(unwrap(args[0], None)[0]) if args else "value"
    if _is_subclass(annotation, ModelIdentifierField):
        return "model"
    if _is_subclass(annotation, ImageField):
        return "image"
    if _is_subclass(annotation, BoardField):
        return "board"
    return "value"


# --- schema ---------------------------------------------------------------------------------------


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


def base_schema(annotation: Any, info: Optional[FieldInfo], node_id: str, field_name: str) -> dict[str, Any]:
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
            item, _ = unwrap(args[0], None)
            items = base_schema(item, None, node_id, field_name)
            if items:
                schema["items"] = items
        return schema
    members = _union_members(annotation)
    if members:
        kinds: list[str] = []
        for member in members:
            member_type = base_schema(member, None, node_id, field_name).get("type")
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


# --- constraints ----------------------------------------------------------------------------------


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


def _schema_bounds(target: Mapping[str, Any]) -> tuple[Optional[tuple[float, bool]], Optional[tuple[float, bool]]]:
    """The bounds a schema already has, as (value, exclusive)."""
    lower = upper = None
    for key, exclusive in (("minimum", False), ("exclusiveMinimum", True)):
        if key in target:
            lower = _bound(lower, (target.pop(key), exclusive), True)
    for key, exclusive in (("maximum", False), ("exclusiveMaximum", True)):
        if key in target:
            upper = _bound(upper, (target.pop(key), exclusive), False)
    return lower, upper


def _tighter_length(target: dict[str, Any], key: str, value: int) -> None:
    current = target.get(key)
    target[key] = value if current is None else (max(current, value) if key.startswith("min") else min(current, value))


def apply_constraints(schema: dict[str, Any], info: FieldInfo, settings: Optional[Mapping[str, Any]],
                       node_id: str, field_name: str) -> None:
    """Bounds, lengths, pattern and multipleOf from the field (its limits included, `core.limits`), tightened by
    4.0 form settings. Constraints the schema holds already are kept where tighter, so a Param can take those
    of every field its value reaches (`compiler.fed_constraints`)."""
    target = schema["items"] if schema.get("type") == "array" and isinstance(schema.get("items"), dict) else schema
    target_type = target.get("type")
    numeric = target_type in ("integer", "number")
    lower, upper = _schema_bounds(target)
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
                _tighter_length(schema, "minItems" if attr == "min_length" else "maxItems", value)
            elif target_type == "string":
                _tighter_length(target, "minLength" if attr == "min_length" else "maxLength", value)
        pattern = getattr(meta, "pattern", None)
        if isinstance(pattern, str) and target_type == "string":
            target.setdefault("pattern", pattern)  # two patterns do not merge; the field's own comes first
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
        current = target.get("multipleOf")
        if current is not None and integer and isinstance(current, int) and isinstance(multiple_of, int):
            multiple_of = math.lcm(current, multiple_of)
        target["multipleOf"] = _number(multiple_of, integer)


def allow_null(schema: dict[str, Any]) -> None:
    """Lets the schema take None too (a "null" type, and None among the enum values)."""
    if "type" not in schema:
        return
    types_ = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if "null" not in types_:
        schema["type"] = [*types_, "null"]
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]


def fits(schema: Mapping[str, Any], item: Any) -> bool:
    """Whether a value has one of the schema's JSON types (a schema without a type takes anything)."""
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
