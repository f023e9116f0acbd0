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
        "connection-types": [{
            "connection-type": "invokeai_s3",
            "hook-class-name": "invokeai_provider.airflow.hooks.InvokeAIS3Hook",
            "hook-name": "InvokeAI S3 storage",
            "conn-fields": {
                "endpoint_url": {"label": "Endpoint URL",
                                 "description": "S3-compatible endpoint (MinIO, SeaweedFS...); empty for AWS S3.",
                                 "schema": {"type": ["string", "null"]}},
                "region_name": {"label": "Region", "description": "Signing region, e.g. us-east-1.",
                                "schema": {"type": ["string", "null"]}},
            },
            "ui-field-behaviour": {
                "hidden-fields": ["schema", "port", "host"],
                "relabeling": {"login": "Access key id", "password": "Secret access key"},
                "placeholders": {"endpoint_url": "http://127.0.0.1:8333", "region_name": "us-east-1"},
            },
        }],
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
