"""The ``tenant`` Param every compiled DAG gets (section "Run"): the storage prefix of the run's images,
tensors and usage records, validated by Airflow before a run exists.

Airflow is imported only inside :func:`tenant_param`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from invokeai_provider.execution.tenants import TENANT_PATTERN, TENANT_RULE, check_tenant

if TYPE_CHECKING:
    from airflow.sdk import Param

__all__ = ["RUN_SECTION", "tenant_param", "tenant_schema"]

RUN_SECTION = "Run"


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
        from invokeai_provider.config import settings

        default = settings().default_tenant
    schema = tenant_schema(default)
    return Param(schema.pop("default"), description=schema.pop("description"), **schema)
