"""Why a value breaks a Param's JSON schema, in one line: what the trigger would refuse, said the way a person
reads it (``not a multiple of 8``, ``12000 characters, more than 10000``) without repeating a value that may be
a megabyte of prompt. Airflow validates Params with jsonschema too, so this refuses exactly what it would.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:
    from jsonschema import ValidationError

__all__ = ["describe_schema", "schema_problem", "shorten"]

_SHOWN_CHOICES = 8
_SHOWN_CHARS = 60


def schema_problem(schema: Mapping[str, Any], value: Any) -> Optional[str]:
    """What is wrong with ``value`` for ``schema`` (the most relevant error), or None when it fits."""
    from jsonschema import FormatChecker
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for

    validator = validator_for(schema)(dict(schema), format_checker=FormatChecker())
    error = best_match(validator.iter_errors(value))
    return None if error is None else _reason(error)


def shorten(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"


def _reason(error: "ValidationError") -> str:
    """What is wrong, without repeating the (possibly huge) value."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    kind, limit, value = error.validator, error.validator_value, error.instance
    reasons = {
        "maxLength": lambda: f"{len(value)} characters, more than {limit}",
        "minLength": lambda: f"{len(value)} characters, fewer than {limit}",
        "maximum": lambda: f"above the maximum {limit}",
        "minimum": lambda: f"below the minimum {limit}",
        "exclusiveMaximum": lambda: f"not below {limit}",
        "exclusiveMinimum": lambda: f"not above {limit}",
        "multipleOf": lambda: f"not a multiple of {limit}",
        "enum": lambda: "not one of the choices",
        "type": lambda: f"not {_article(limit)}",
        "maxItems": lambda: f"{len(value)} items, more than {limit}",
        "minItems": lambda: f"{len(value)} items, fewer than {limit}",
        "pattern": lambda: f"does not match {limit}",
    }
    text = reasons[kind]() if kind in reasons else error.message
    if len(text) > 120:
        text = text[:117] + "..."
    return f"item {where}: {text}" if where else text


def _article(kind: Any) -> str:
    kinds = kind if isinstance(kind, list) else [kind]
    names = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
             "array": "a list", "object": "an object", "null": "null"}
    return " or ".join(names.get(str(k), str(k)) for k in kinds)


def describe_schema(schema: Mapping[str, Any]) -> str:
    """``an integer from 64 to 2048, a multiple of 8``, ``one of: euler, ddim, ...``, ``a list of ...``."""
    if "enum" in schema:
        choices = [str(c) for c in schema["enum"]]
        shown = ", ".join(choices[:_SHOWN_CHOICES])
        more = f", ... ({len(choices)} choices)" if len(choices) > _SHOWN_CHOICES else ""
        return f"one of: {shown}{more}"
    kinds = schema.get("type", "any value")
    text = _article([k for k in kinds if k != "null"] if isinstance(kinds, list) else kinds)
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        text += f" from {low} to {high}"
    elif low is not None:
        text += f" of at least {low}"
    elif high is not None:
        text += f" of at most {high}"
    if "multipleOf" in schema:
        text += f", a multiple of {schema['multipleOf']}"
    if "minLength" in schema or "maxLength" in schema:
        text += f" of {schema.get('minLength', 0)} to {schema['maxLength']} characters" if "maxLength" in schema \
            else f" of at least {schema['minLength']} characters"
    if "pattern" in schema:
        text += f" matching {schema['pattern']}"
    if "minItems" in schema:
        text += f" of at least {schema['minItems']} items"
    if isinstance(schema.get("items"), Mapping):
        text += f", each {describe_schema(schema['items'])}"
    if isinstance(kinds, list) and "null" in kinds:
        text += ", or null"
    return text
