"""The image library as the api-server's plugin app uses it: the configured artifact root, one index per tenant
kept for the life of the process, and the JSON an image is shown as (its record plus the app's links)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from invokeai_provider.storage.library.boards import Boards
from invokeai_provider.storage.library.images import ImageLibrary
from invokeai_provider.storage.library.index import ImageIndex


@dataclass
class LibraryService:
    """The libraries of one artifact root (``[invokeai] artifact_root`` unless given)."""

    artifact_root: Optional[str] = None
    _indexes: dict[str, ImageIndex] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _backend: Any = None

    @property
    def backend(self) -> Any:
        if self._backend is None:
            from invokeai_provider.storage.base import backend_for_uri, default_artifact_root

            self._backend = backend_for_uri(self.artifact_root or default_artifact_root())
        return self._backend

    def library(self, tenant: str) -> ImageLibrary:
        from invokeai_provider.execution.tenants import check_tenant

        return ImageLibrary(self.backend, check_tenant(tenant, field="tenant"))

    def index(self, tenant: str) -> ImageIndex:
        with self._lock:
            if tenant not in self._indexes:
                self._indexes[tenant] = ImageIndex(self.library(tenant))
            return self._indexes[tenant]

    def changed(self, tenant: str) -> None:
        """After a change made here (upload, star, move, delete): the next listing shows it."""
        self.index(tenant).invalidate()

    def boards(self, tenant: str) -> Boards:
        return Boards(self.library(tenant), self.index(tenant))

    def tenants(self) -> list[str]:
        """The tenants that have something in the store (folders at the root)."""
        from invokeai_provider.execution.tenants import TENANT_PATTERN

        return [name for name in self.backend.folders("") if re.match(TENANT_PATTERN, name)]


def image_json(record: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A record as the app returns it: InvokeAI's ImageDTO shape (the record, ``image_url``, ``thumbnail_url``)."""
    name, tenant = record["image_name"], record.get("tenant") or ""
    base = f"{prefix}/api/images/{name}"
    return {**{k: v for k, v in record.items() if k != "key"}, "tenant": tenant,
            "image_url": f"{base}/full?tenant={tenant}", "thumbnail_url": f"{base}/thumbnail?tenant={tenant}",
            "page_url": f"{prefix}/gallery/images/{name}?tenant={tenant}"}
