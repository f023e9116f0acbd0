"""Airflow hooks of the provider: the S3 connection of the artifact and model stores.

The S3 backend (``invokeai_provider.storage.s3``) reads the same connection without the hook; the hook is what
Airflow's connection UI and ``test_connection`` use for the ``invokeai_s3`` connection type.
"""

from __future__ import annotations

from typing import Any, Optional

from airflow.sdk import BaseHook

from invokeai_provider.config import settings as provider_settings
from invokeai_provider.storage.s3 import CONN_TYPE, S3Settings, connection_settings, s3_client


class InvokeAIS3Hook(BaseHook):
    """The S3 connection of the artifact and model stores (type ``invokeai_s3``; ``aws`` connections work too).

    Fields: login = access key id, password = secret access key, extras ``endpoint_url`` (MinIO, SeaweedFS...)
    and ``region_name``.
    """

    conn_name_attr = "s3_conn_id"
    default_conn_name = "invokeai_s3"
    conn_type = CONN_TYPE
    hook_name = "InvokeAI S3 storage"

    def __init__(self, s3_conn_id: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.s3_conn_id = s3_conn_id or provider_settings().s3_conn_id

    def settings(self) -> S3Settings:
        return connection_settings(self.s3_conn_id)

    def get_client(self) -> Any:
        """The boto3 S3 client for this connection (shared within the process)."""
        return s3_client(self.settings())

    def get_conn(self) -> Any:
        return self.get_client()

    def test_connection(self) -> tuple[bool, str]:
        try:
            buckets = self.get_client().list_buckets().get("Buckets", [])
        except Exception as exc:  # noqa: BLE001 - the UI shows the message
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"connected; {len(buckets)} buckets visible"
