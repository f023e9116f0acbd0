"""The provider's Airflow UI plugin: the image gallery.

A FastAPI app under ``/invokeai`` on the api-server (`api` for JSON and image bytes, `pages` for the HTML views)
and three external views: a Gallery entry in the navigation, an Images tab on every DAG run and nothing else.
Registered through the ``airflow.plugins`` entry point, so installing the package is enough.
"""

from __future__ import annotations

from typing import Optional

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI

URL_PREFIX = "/invokeai"


def create_app(artifact_root: Optional[str] = None) -> FastAPI:
    """The gallery app; ``artifact_root`` defaults to ``[invokeai] artifact_root``."""
    from invokeai_provider.airflow.plugin import api, pages
    from invokeai_provider.airflow.plugin.library_service import LibraryService

    app = FastAPI(title="InvokeAI image library", description="Images, boards and uploads of the tenants the "
                  "caller may see ([invokeai] tenant_access).")
    app.state.library = LibraryService(artifact_root)
    app.include_router(api.router)
    app.include_router(pages.router)
    return app


class InvokeAIPlugin(AirflowPlugin):
    name = "invokeai"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "InvokeAI image library"}]
    external_views = [
        {"name": "Gallery", "href": f"{URL_PREFIX}/gallery", "destination": "nav", "nav_top_level": True,
         "url_route": "invokeai-gallery"},
        {"name": "Images", "href": f"{URL_PREFIX}/gallery/runs/{{DAG_ID}}/{{RUN_ID}}", "destination": "dag_run",
         "url_route": "invokeai-run-images"},
    ]
