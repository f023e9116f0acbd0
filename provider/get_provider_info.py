"""Airflow provider metadata, found through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from invokeai_provider import __version__
from invokeai_provider.config import OPTIONS, SECTION


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-invokeai",
        "name": "InvokeAI",
        "description": "InvokeAI node graphs and saved workflows as Airflow DAGs: one operator per node type, "
                       "GPU routing, artifacts in object storage.",
        "versions": [__version__],
        "integrations": [{"integration-name": "InvokeAI", "external-doc-url": "https://github.com/invoke-ai/InvokeAI",
                          "tags": ["software"]}],
        "config": {
            SECTION: {
                "description": "Settings of the InvokeAI provider: storage, models, GPU routing and caches.",
                "options": {
                    name: {"description": description, "version_added": "0.1.0", "type": "string",
                           "example": None, "default": default}
                    for name, (default, description) in OPTIONS.items()
                },
            }
        },
    }
