"""The gallery's HTTP API, mounted by the plugin under ``/invokeai`` on Airflow's api-server.

Every route depends on `caller` (Airflow's own ``get_user``: the ``Authorization: Bearer`` token, else the UI's
session cookie) and checks the tenant against ``[invokeai] tenant_access``. Images and thumbnails are served by
the app itself, so a browser needs nothing but its Airflow session.

    GET    /api/tenants                                    the tenants the caller sees
    GET    /api/images?tenant=&board_id=&dag_id=&run_id=&starred=&category=&since=&until=&offset=&limit=
    POST   /api/images/upload?tenant=&board_id=&image_category=   (body: the image file)
    GET    /api/images/{name}?tenant=                      record, metadata, graph and workflow
    GET    /api/images/{name}/full|thumbnail|metadata|graph|workflow?tenant=[&download=true]
    PATCH  /api/images/{name}?tenant=                      {"starred": true, "board_id": "..." or null}
    DELETE /api/images/{name}?tenant=
    GET    /api/boards?tenant=          POST /api/boards?tenant= {"board_name": "..."}
    PATCH  /api/boards/{id}?tenant= {"board_name": "..."}   DELETE /api/boards/{id}?tenant=&include_images=
"""

from __future__ import annotations

import json
from typing import Any, Optional

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response, status

from invokeai_provider.airflow.plugin.access import check_tenant_access, visible_tenants
from invokeai_provider.airflow.plugin.library_service import LibraryService, image_json
from invokeai_provider.errors import ArtifactNotFoundError, InvokeAIProviderError

MAX_PAGE = 500
MAX_UPLOAD_BYTES = 256 << 20


async def caller(request: Request) -> Any:
    """The Airflow user behind the request, by Airflow's own ``get_user``: the ``Authorization: Bearer`` token,
    else the UI's session cookie (401 without either, 403 with an invalid one). Airflow's API security is imported
    here, not with the module: every task process loads the plugins, and only the api-server serves this app."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, _oauth_token=None, bearer_credentials=await bearer_scheme(request))


def tenant_of(request: Request, user: Any, tenant: Optional[str]) -> str:
    """The tenant asked for (default ``[invokeai] default_tenant``), checked against the caller's access."""
    from invokeai_provider.config import settings
    from invokeai_provider.execution.tenants import check_tenant

    config = settings("tenant_access", "default_tenant")
    try:
        name = check_tenant(tenant or config.default_tenant, field="tenant")
    except InvokeAIProviderError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
    check_tenant_access(user, name, config.tenant_access)
    return name


def service_of(request: Request) -> LibraryService:
    return request.app.state.library


def prefix_of(request: Request) -> str:
    return str(request.scope.get("root_path") or "").rstrip("/")


def http_errors(exc: Exception) -> HTTPException:
    """The library's errors as HTTP answers: not found 404, anything else it refuses 422."""
    if isinstance(exc, ArtifactNotFoundError):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc))


router = APIRouter(prefix="/api")


@router.get("/tenants")
def list_tenants(request: Request, user: Any = Depends(caller)) -> dict[str, Any]:
    from invokeai_provider.config import settings

    return {"tenants": visible_tenants(user, settings("tenant_access").tenant_access, service_of(request).tenants())}


@router.get("/images")
def list_images(request: Request, user: Any = Depends(caller), tenant: Optional[str] = None,
                board_id: Optional[str] = None, dag_id: Optional[str] = None, run_id: Optional[str] = None,
                starred: Optional[bool] = None, category: Optional[list[str]] = Query(None),
                include_intermediate: bool = False, since: Optional[str] = None, until: Optional[str] = None,
                offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=MAX_PAGE)) -> dict[str, Any]:
    """Newest first. ``board_id`` "none": images on no board; ``since``/``until``: ISO dates or times."""
    from invokeai_provider.storage.library.index import ImageQuery

    name = tenant_of(request, user, tenant)
    page = service_of(request).index(name).query(ImageQuery(
        board_id=board_id, dag_id=dag_id, run_id=run_id, starred=starred,
        categories=tuple(category) if category else None, include_intermediate=include_intermediate,
        since=since, until=until),
        offset=offset, limit=limit)
    prefix = prefix_of(request)
    return {"tenant": name, "total": page.total, "offset": page.offset, "limit": page.limit,
            "items": [image_json(record, prefix) for record in page.records]}


@router.post("/images/upload", status_code=status.HTTP_201_CREATED)
async def upload_image(request: Request, user: Any = Depends(caller), tenant: Optional[str] = None,
                       board_id: Optional[str] = None, image_category: str = "user") -> dict[str, Any]:
    """The request body is the image file (any format PIL reads; stored as PNG)."""
    from starlette.concurrency import run_in_threadpool

    name = tenant_of(request, user, tenant)
    data = await request.body()
    if not data:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "upload: the request body is empty (send the "
                                                                  "image file as the body)")
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"upload: more than {MAX_UPLOAD_BYTES} bytes")
    service = service_of(request)

    def store() -> dict[str, Any]:
        if board_id:
            service.boards(name).get(board_id)
        return service.library(name).upload(data, board_id=board_id, category=image_category)

    try:
        record = await run_in_threadpool(store)
    except InvokeAIProviderError as exc:
        raise http_errors(exc) from None
    service.changed(name)
    return image_json(record, prefix_of(request))


def _record(request: Request, user: Any, tenant: Optional[str], image_name: str) -> tuple[str, dict[str, Any]]:
    name = tenant_of(request, user, tenant)
    try:
        return name, service_of(request).library(name).get(image_name)
    except InvokeAIProviderError as exc:
        raise http_errors(exc) from None


def image_details(service: LibraryService, tenant: str, record: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The record with the InvokeAI metadata, graph and workflow its PNG carries."""
    from invokeai_provider.storage.library.images import read_chunks

    png = service.library(tenant).read_image(record["image_name"], record)
    return {**image_json(record, prefix), **read_chunks(png)}


@router.get("/images/{image_name}")
def get_image(request: Request, image_name: str, user: Any = Depends(caller),
              tenant: Optional[str] = None) -> dict[str, Any]:
    name, record = _record(request, user, tenant, image_name)
    return image_details(service_of(request), name, record, prefix_of(request))


@router.get("/images/{image_name}/full")
def get_image_file(request: Request, image_name: str, user: Any = Depends(caller), tenant: Optional[str] = None,
                   download: bool = False) -> Response:
    name, record = _record(request, user, tenant, image_name)
    data = service_of(request).library(name).read_image(image_name, record)
    return Response(data, media_type="image/png", headers=_disposition(image_name, download))


@router.get("/images/{image_name}/thumbnail")
def get_thumbnail(request: Request, image_name: str, user: Any = Depends(caller),
                  tenant: Optional[str] = None) -> Response:
    name = tenant_of(request, user, tenant)
    try:
        data = service_of(request).library(name).read_thumbnail(image_name)
    except InvokeAIProviderError as exc:
        raise http_errors(exc) from None
    return Response(data, media_type="image/webp", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/images/{image_name}/{part}")
def get_image_part(request: Request, image_name: str, part: str, user: Any = Depends(caller),
                   tenant: Optional[str] = None, download: bool = False) -> Response:
    """``metadata``, ``graph`` or ``workflow``: the JSON in the PNG (a workflow loads into InvokeAI as it is)."""
    if part not in ("metadata", "graph", "workflow"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {part!r} for an image (metadata, graph, workflow)")
    from invokeai_provider.storage.library.images import read_chunks

    name, record = _record(request, user, tenant, image_name)
    value = read_chunks(service_of(request).library(name).read_image(image_name, record))[part]
    if value is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image {image_name!r} carries no {part}")
    stem = image_name.removesuffix(".png")
    return Response(json.dumps(value, indent=2), media_type="application/json",
                    headers=_disposition(f"{stem}.{part}.json", download))


@router.patch("/images/{image_name}")
def update_image(request: Request, image_name: str, changes: dict[str, Any] = Body(...),
                 user: Any = Depends(caller), tenant: Optional[str] = None) -> dict[str, Any]:
    name, _ = _record(request, user, tenant, image_name)
    service = service_of(request)
    try:
        if changes.get("board_id"):
            service.boards(name).get(changes["board_id"])
        record = service.library(name).update(image_name, **changes)
    except InvokeAIProviderError as exc:
        raise http_errors(exc) from None
    service.changed(name)
    return image_json(record, prefix_of(request))


@router.delete("/images/{image_name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_image(request: Request, image_name: str, user: Any = Depends(caller),
                 tenant: Optional[str] = None) -> Response:
    name, _ = _record(request, user, tenant, image_name)
    service_of(request).library(name).delete(image_name)
    service_of(request).changed(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/boards")
def list_boards(request: Request, user: Any = Depends(caller), tenant: Optional[str] = None) -> dict[str, Any]:
    name = tenant_of(request, user, tenant)
    return {"tenant": name, "boards": service_of(request).boards(name).all()}


@router.post("/boards", status_code=status.HTTP_201_CREATED)
def create_board(request: Request, body: dict[str, Any] = Body(...), user: Any = Depends(caller),
                 tenant: Optional[str] = None) -> dict[str, Any]:
    name = tenant_of(request, user, tenant)
    try:
        return service_of(request).boards(name).create(body.get("board_name"))
    except InvokeAIProviderError as exc:
        raise http_errors(exc) from None


@router.patch("/boards/{board_id}")
def rename_board(request: Request, board_id: str, body: dict[str, Any] = Body(...), user: Any = Depends(caller),
                 tenant: Optional[str] = None) -> dict[str, Any]:
    name = tenant_of(request, user, tenant)
    try:
        return service_of(request).boards(name).rename(board_id, body.get("board_name"))
    except InvokeAIProviderError as exc:
        raise http_errors(exc) from None


@router.delete("/boards/{board_id}")
def delete_board(request: Request, board_id: str, user: Any = Depends(caller), tenant: Optional[str] = None,
                 include_images: bool = False) -> dict[str, Any]:
    name = tenant_of(request, user, tenant)
    try:
        names = service_of(request).boards(name).delete(board_id, include_images=include_images)
    except InvokeAIProviderError as exc:
        raise http_errors(exc) from None
    service_of(request).changed(name)
    return {"board_id": board_id, "deleted_images" if include_images else "kept_images": names}


def _disposition(filename: str, download: bool) -> dict[str, str]:
    return {"Content-Disposition": f'{"attachment" if download else "inline"}; filename="{filename}"'}
