"""The gallery's pages (server-rendered HTML, shown by Airflow's UI in its plugin views): the Gallery in the
navigation, the Images tab of a DAG run and an image's page. They use the same checks as the API."""

from __future__ import annotations

import html
import json
from typing import Any, Optional
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from invokeai_provider.airflow.plugin.access import visible_tenants
from invokeai_provider.airflow.plugin.api import (
    caller,
    http_errors,
    image_details,
    prefix_of,
    service_of,
    tenant_of,
)
from invokeai_provider.airflow.plugin.library_service import image_json
from invokeai_provider.errors import InvokeAIProviderError

PAGE_SIZE = 100
_STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;color:#1f2328;background:#fff}
h1{font-size:20px;margin:0 0 12px} a{color:#0969da;text-decoration:none}
form.filters{display:flex;gap:12px;align-items:end;flex-wrap:wrap;margin-bottom:12px}
form.filters label{display:flex;flex-direction:column;font-size:12px;gap:2px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:10px}
.tile{border:1px solid #d0d7de;border-radius:6px;padding:4px;font-size:11px;overflow:hidden}
.tile img{width:100%;height:130px;object-fit:contain;background:#f6f8fa}
.muted{color:#656d76} .star{color:#bf8700} table{border-collapse:collapse;font-size:13px}
td,th{border-bottom:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:320px;font-size:12px}
.full{width:min(100%,512px);height:auto;max-height:70vh;object-fit:contain;image-rendering:pixelated;
border:1px solid #d0d7de;display:block;margin-bottom:8px}
"""

router = APIRouter()


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                        f"<style>{_STYLE}</style></head><body>{body}</body></html>")


def _tiles(items: list[dict[str, Any]]) -> str:
    if not items:
        return "<p class='muted'>No images.</p>"
    tiles = []
    for item in items:
        label = item.get("dag_id") and f"{item['dag_id']}" or "upload"
        tiles.append(
            f"<a class='tile' href='{html.escape(item['page_url'])}' data-image-name='{html.escape(item['image_name'])}'>"
            f"<img loading='lazy' src='{html.escape(item['thumbnail_url'])}' alt='{html.escape(item['image_name'])}'>"
            f"<div>{'<span class=star>★</span> ' if item.get('starred') else ''}{html.escape(label)}</div>"
            f"<div class='muted'>{html.escape(str(item.get('created_at') or '')[:19])}</div></a>")
    return f"<div class='grid'>{''.join(tiles)}</div>"


def _count(images: int) -> str:
    return f"{images:,} image{'' if images == 1 else 's'}"


def _options(values: list[tuple[str, str]], selected: Optional[str]) -> str:
    return "".join(f"<option value='{html.escape(v)}'{' selected' if v == (selected or '') else ''}>"
                   f"{html.escape(label)}</option>" for v, label in values)


@router.get("/gallery", response_class=HTMLResponse)
def gallery(request: Request, user: Any = Depends(caller), tenant: Optional[str] = None,
            board_id: Optional[str] = None, dag_id: Optional[str] = None, starred: bool = False,
            page: int = Query(1, ge=1)) -> HTMLResponse:
    from invokeai_provider.config import settings
    from invokeai_provider.storage.library.index import ImageQuery

    service = service_of(request)
    config = settings("tenant_access", "default_tenant")
    tenants = visible_tenants(user, config.tenant_access, service.tenants())
    if tenant is None and not tenants:
        return _page("Gallery", "<h1>Gallery</h1><p class='muted'>You may not see any tenant's images "
                                "([invokeai] tenant_access).</p>")
    name = tenant_of(request, user, tenant or (config.default_tenant if config.default_tenant in tenants
                                               else tenants[0]))
    result = service.index(name).query(
        ImageQuery(board_id=board_id or None, dag_id=dag_id or None, starred=True if starred else None),
        offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    prefix = prefix_of(request)
    boards = service.boards(name).all()
    filters = (
        f"<form class='filters' method='get'>"
        f"<label>Tenant<select name='tenant'>{_options([(t, t) for t in tenants or [name]], name)}</select></label>"
        f"<label>Board<select name='board_id'>{_options([('', 'All'), ('none', 'Uncategorized')] + [(b['board_id'], b['board_name']) for b in boards], board_id)}</select></label>"
        f"<label>DAG<input name='dag_id' value='{html.escape(dag_id or '')}' placeholder='any'></label>"
        f"<label>Starred<input type='checkbox' name='starred' value='true'{' checked' if starred else ''}></label>"
        f"<button type='submit'>Show</button></form>")
    pages = max(1, -(-result.total // PAGE_SIZE))
    query = {k: v for k, v in {"tenant": name, "board_id": board_id, "dag_id": dag_id,
                               "starred": "true" if starred else None}.items() if v}
    nav = " ".join(
        f"<a href='?{html.escape(urlencode({**query, 'page': number}))}'>{label}</a>"
        for number, label in ((page - 1, "← newer"), (page + 1, "older →")) if 1 <= number <= pages)
    items = [image_json(record, prefix) for record in result.records]
    body = (f"<h1>Gallery</h1>{filters}<p class='muted'>{_count(result.total)} · page {page} of {pages} {nav}</p>"
            f"{_tiles(items)}")
    return _page("Gallery", body)


@router.get("/gallery/runs/{dag_id}/{run_id}", response_class=HTMLResponse)
def run_images(request: Request, dag_id: str, run_id: str, user: Any = Depends(caller)) -> HTMLResponse:
    """A DAG run's images, from every tenant the caller sees (a run writes to one tenant)."""
    from invokeai_provider.config import settings
    from invokeai_provider.storage.library.index import ImageQuery

    service = service_of(request)
    prefix = prefix_of(request)
    items: list[dict[str, Any]] = []
    for name in visible_tenants(user, settings("tenant_access").tenant_access, service.tenants()):
        page = service.index(name).query(ImageQuery(dag_id=dag_id, run_id=run_id, include_intermediate=True),
                                         limit=10_000)
        items += [image_json(record, prefix) for record in page.records]
    items.sort(key=lambda item: (item.get("item_index") or 0, item["image_name"]))
    title = f"Images of {dag_id} / {run_id}"
    return _page(title, f"<h1>{html.escape(title)}</h1><p class='muted'>{_count(len(items))}</p>{_tiles(items)}")


@router.get("/gallery/images/{image_name}", response_class=HTMLResponse)
def image_page(request: Request, image_name: str, user: Any = Depends(caller),
               tenant: Optional[str] = None) -> HTMLResponse:
    name = tenant_of(request, user, tenant)
    service = service_of(request)
    try:
        details = image_details(service, name, service.library(name).get(image_name), prefix_of(request))
    except InvokeAIProviderError as exc:
        raise http_errors(exc) from None
    metadata = details.get("metadata") or {}
    base = f"{prefix_of(request)}/api/images/{image_name}"
    shown = [("Prompt", metadata.get("positive_prompt")), ("Negative prompt", metadata.get("negative_prompt")),
             ("Seed", metadata.get("seed")), ("Model", (metadata.get("model") or {}).get("name")
                                                if isinstance(metadata.get("model"), dict) else metadata.get("model")),
             ("Steps", metadata.get("steps")), ("CFG scale", metadata.get("cfg_scale")),
             ("Scheduler", metadata.get("scheduler")), ("Size", f"{details['width']}x{details['height']}"),
             ("Board", details.get("board_id") or "none"), ("Starred", "yes" if details.get("starred") else "no"),
             ("Made by", f"{details['dag_id']} / {details['run_id']} / {details.get('task_id')}"
              if details.get("dag_id") else "upload"), ("Created", details.get("created_at"))]
    rows = "".join(f"<tr><th>{label}</th><td class='field-{html.escape(label.lower().replace(' ', '-'))}'>"
                   f"{html.escape(str(value))}</td></tr>" for label, value in shown if value not in (None, ""))
    run_link = ""
    if details.get("dag_id"):
        run_link = (f" · <a href='/dags/{html.escape(details['dag_id'])}/runs/{html.escape(details['run_id'])}' "
                    f"target='_top'>the run</a>")
    downloads = [f"<a href='{base}/full?tenant={name}&download=true'>PNG</a>"]
    for part in ("workflow", "graph", "metadata"):
        if details.get(part) is not None:
            downloads.append(f"<a href='{base}/{part}?tenant={name}&download=true'>{part} (JSON)</a>")
    body = (f"<h1>{html.escape(image_name)}</h1>"
            f"<p><a href='{prefix_of(request)}/gallery?tenant={name}'>← gallery</a>{run_link}</p>"
            f"<img class='full' src='{base}/full?tenant={name}' alt='{html.escape(image_name)}'>"
            f"<table>{rows}</table><p>Download: {' · '.join(downloads)}</p>"
            f"<h2>InvokeAI metadata</h2><pre>{html.escape(json.dumps(metadata, indent=2))}</pre>")
    return _page(image_name, body)
