"""The run conf checked against the DAG's Params before Airflow sees it, so a wrong value is one line naming the
Param, the value and what it takes (Airflow's own refusal prints the whole JSON schema). The schemas are the
ones Airflow validates with (``compiler.params``), explained by ``compiler.param_check``.
"""

from __future__ import annotations

from typing import Any, Mapping

from invokeai_provider.compiler.param_check import describe_schema, schema_problem, shorten
from invokeai_provider.errors import InvokeAIProviderError

__all__ = ["ParamValueError", "check_conf"]


class ParamValueError(InvokeAIProviderError):
    """A run conf value that its Param's schema refuses."""


def check_conf(schemas: Mapping[str, Mapping[str, Any]], conf: Mapping[str, Any]) -> None:
    """Raises ParamValueError for the first conf value (in form order) that its Param's schema refuses.

    ``schemas``: Param name -> JSON schema, as the DAG's Params have them (``ParamSpec.schema``)."""
    for name, schema in schemas.items():
        if name not in conf:
            continue
        problem = schema_problem(schema, conf[name])
        if problem is not None:
            title = schema.get("title")
            named = f"Param {name}" + (f" ({title})" if title and title != name else "")
            raise ParamValueError(f"{named}: got {shorten(conf[name])}: {problem}; expected {describe_schema(schema)}")
