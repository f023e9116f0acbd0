"""The gallery plugin's app with two users: every route asks who the caller is and allows only the tenants
``[invokeai] tenant_access`` gives them; upload, list, details, downloads, star, boards, delete, and the pages."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from invokeai_provider.airflow.plugin import InvokeAIPlugin, create_app
from invokeai_provider.airflow.plugin.api import caller


class User:
    """An Airflow user as the simple auth manager makes them (name and role)."""

    def __init__(self, username: str, role: str) -> None:
        self.username, self.role = username, role

    def get_name(self) -> str:
        return self.username


def png(color: tuple[int, int, int] = (30, 90, 200), **chunks: str) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AIRFLOW__INVOKEAI__TENANT_ACCESS", json.dumps({"role:admin": ["*"], "alice": ["acme"]}))
    monkeypatch.setenv("AIRFLOW__INVOKEAI__LIBRARY_INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.setenv("AIRFLOW__INVOKEAI__DEFAULT_TENANT", "acme")
    yield create_app((tmp_path / "artifacts").as_uri())


def client_as(app: Any, user: User | None) -> TestClient:
    if user is None:
        app.dependency_overrides.pop(caller, None)
    else:
        app.dependency_overrides[caller] = lambda: user
    return TestClient(app)


ADMIN, ALICE, BOB = User("admin", "admin"), User("alice", "user"), User("bob", "user")
METADATA = json.dumps({"positive_prompt": "a lighthouse at dusk", "seed": 1234, "steps": 4,
                       "model": {"name": "tiny-sd15"}})
WORKFLOW = json.dumps({"name": "t2i", "nodes": [], "edges": []})


def test_two_users_see_only_their_tenants(app: Any) -> None:
    admin = client_as(app, ADMIN)
    mine = admin.post("/api/images/upload?tenant=acme", content=png(invokeai_metadata=METADATA))
    theirs = admin.post("/api/images/upload?tenant=beta", content=png((200, 0, 0)))
    assert mine.status_code == theirs.status_code == 201, (mine.text, theirs.text)
    acme_image, beta_image = mine.json()["image_name"], theirs.json()["image_name"]
    assert admin.get("/api/tenants").json() == {"tenants": ["acme", "beta"]}

    alice = client_as(app, ALICE)
    assert alice.get("/api/tenants").json() == {"tenants": ["acme"]}
    assert [i["image_name"] for i in alice.get("/api/images?tenant=acme").json()["items"]] == [acme_image]
    for path in ("/api/images?tenant=beta", f"/api/images/{beta_image}?tenant=beta",
                 f"/api/images/{beta_image}/full?tenant=beta", f"/api/images/{beta_image}/thumbnail?tenant=beta",
                 "/api/boards?tenant=beta"):
        answer = alice.get(path)
        assert answer.status_code == 403 and "may not see tenant 'beta'" in answer.json()["detail"], path
    assert alice.post("/api/images/upload?tenant=beta", content=png()).status_code == 403
    assert alice.delete(f"/api/images/{beta_image}?tenant=beta").status_code == 403
    # a name of another tenant asked for in one's own is simply not there
    assert alice.get(f"/api/images/{beta_image}?tenant=acme").status_code == 404

    bob = client_as(app, BOB)  # no entry in tenant_access: sees nothing
    assert bob.get("/api/tenants").json() == {"tenants": []}
    assert bob.get("/api/images?tenant=acme").status_code == 403
    assert "may not see any tenant" in bob.get("/gallery").text


def test_without_an_airflow_session_every_route_answers_401(app: Any) -> None:
    anonymous = client_as(app, None)
    for path in ("/api/tenants", "/api/images", "/gallery", "/gallery/images/x.png", "/gallery/runs/d/r"):
        assert anonymous.get(path).status_code == 401, path


def test_upload_details_downloads_star_boards_and_delete(app: Any) -> None:
    alice = client_as(app, ALICE)
    assert alice.post("/api/images/upload", content=b"not an image").status_code == 422
    assert alice.post("/api/images/upload", content=b"").status_code == 422
    board = alice.post("/api/boards", json={"board_name": "lighthouses"}).json()
    created = alice.post(f"/api/images/upload?board_id={board['board_id']}",
                         content=png(invokeai_metadata=METADATA, invokeai_workflow=WORKFLOW)).json()
    name = created["image_name"]
    assert created["board_id"] == board["board_id"] and created["image_origin"] == "external"
    assert created["thumbnail_url"] == f"/api/images/{name}/thumbnail?tenant=acme"

    details = alice.get(f"/api/images/{name}").json()
    assert details["metadata"]["positive_prompt"] == "a lighthouse at dusk" and details["workflow"]["name"] == "t2i"
    full = alice.get(f"/api/images/{name}/full?download=true")
    assert full.headers["content-type"] == "image/png" and "attachment" in full.headers["content-disposition"]
    assert alice.get(f"/api/images/{name}/thumbnail").headers["content-type"] == "image/webp"
    workflow = alice.get(f"/api/images/{name}/workflow?download=true")
    assert workflow.json() == json.loads(WORKFLOW) and f"{name[:-4]}.workflow.json" in workflow.headers[
        "content-disposition"]
    assert alice.get(f"/api/images/{name}/graph").status_code == 404  # it carries none

    assert alice.patch(f"/api/images/{name}", json={"starred": True}).json()["starred"] is True
    assert alice.patch(f"/api/images/{name}", json={"width": 3}).status_code == 422
    assert alice.get("/api/images?starred=true").json()["total"] == 1
    assert alice.get(f"/api/images?board_id={board['board_id']}").json()["total"] == 1
    assert alice.patch(f"/api/boards/{board['board_id']}", json={"board_name": "coast"}).json()["board_name"] == "coast"
    assert alice.delete(f"/api/boards/{board['board_id']}").json() == {"board_id": board["board_id"],
                                                                       "kept_images": [name]}
    assert alice.get("/api/images?board_id=none").json()["total"] == 1
    assert alice.delete(f"/api/images/{name}").status_code == 204
    assert alice.get(f"/api/images/{name}").status_code == 404


def test_pages_show_thumbnails_a_runs_images_and_an_images_metadata(app: Any, tmp_path: Path) -> None:
    from PIL import Image

    from invokeai_provider.storage.base import LocalArtifactBackend
    from invokeai_provider.storage.library.images import ImageLibrary, new_record
    from invokeai_provider.storage.library.names import run_image_name

    library = ImageLibrary(LocalArtifactBackend(tmp_path / "artifacts"), "acme")
    name = run_image_name("acme/runs/t2i/manual__1", "decode-0.png")
    key = f"acme/runs/t2i/manual__1/images/{name}"
    library.backend.write_bytes(key, png(invokeai_metadata=METADATA))
    library.add(new_record(image_name=name, key=key, width=48, height=32, origin="internal", category="general",
                           is_intermediate=False, has_workflow=False, tenant="acme", dag_id="t2i",
                           run_id="manual__1", task_id="decode"), Image.new("RGB", (48, 32)))
    alice = client_as(app, ALICE)
    gallery = alice.get("/gallery").text
    assert f"/api/images/{name}/thumbnail?tenant=acme" in gallery and "1 image ·" in gallery
    run_page = alice.get("/gallery/runs/t2i/manual__1").text
    assert f"data-image-name='{name}'" in run_page
    assert "data-image-name" not in alice.get("/gallery/runs/t2i/other-run").text
    page = alice.get(f"/gallery/images/{name}").text
    assert "a lighthouse at dusk" in page and "1234" in page and "tiny-sd15" in page
    assert "/dags/t2i/runs/manual__1" in page and f"/api/images/{name}/full?tenant=acme&download=true" in page


def test_the_plugin_registers_the_app_and_its_views() -> None:
    [app] = InvokeAIPlugin.fastapi_apps
    assert app["url_prefix"] == "/invokeai"
    views = {view["destination"]: view for view in InvokeAIPlugin.external_views}
    assert views["nav"]["href"] == "/invokeai/gallery"
    assert views["dag_run"]["href"] == "/invokeai/gallery/runs/{DAG_ID}/{RUN_ID}"
    from importlib.metadata import entry_points

    assert any(ep.value == "invokeai_provider.airflow.plugin:InvokeAIPlugin"
               for ep in entry_points(group="airflow.plugins"))
