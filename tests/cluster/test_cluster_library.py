"""The image library end to end on the local cluster: upload an image over HTTP, trigger the image-to-image
workflow with it through the REST API, and find the result in the gallery API of its run and its board; the
viewer user (no tenant in ``[invokeai] tenant_access``) gets 403, a caller without a session 401."""

from __future__ import annotations

import io
import json
from urllib.parse import quote

from cluster_client import ClusterClient, task_logs

from invokeai_provider.cluster.cluster import VIEWER_USER

DAG = "sd15-image-to-image"
API = "/invokeai/api"


def png(width: int = 64, height: int = 48) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 140, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_image_to_image_and_the_gallery(cluster: ClusterClient) -> None:
    status, body = cluster.http("POST", f"{API}/boards?tenant=default", {"board_name": "e2e results"})
    assert status == 201, body
    board = json.loads(body)["board_id"]
    status, body = cluster.http("POST", f"{API}/images/upload?tenant=default", png(), content_type="image/png")
    assert status == 201, body
    uploaded = json.loads(body)["image_name"]

    cluster.wait_for_dag(DAG)
    run_id = cluster.trigger(DAG, {"image": uploaded, "model": "tiny-sd15", "denoise_steps": 2, "strength": 0.5,
                                   "board": board})
    assert cluster.wait(DAG, run_id, timeout=600) == "success", task_logs(cluster.settings, DAG, run_id)

    status, body = cluster.http("GET", f"{API}/images?tenant=default&dag_id={DAG}&run_id={quote(run_id)}")
    assert status == 200, body
    [made] = json.loads(body)["items"]
    assert (made["width"], made["height"], made["board_id"]) == (64, 48, board)
    status, body = cluster.http("GET", f"{API}/images?tenant=default&board_id={board}")
    assert [item["image_name"] for item in json.loads(body)["items"]] == [made["image_name"]]
    status, body = cluster.http("GET", f"{API}/images/{made['image_name']}?tenant=default")
    details = json.loads(body)
    assert details["graph"]["nodes"]["image"]["image"] == {"image_name": uploaded}
    assert details["metadata"]["strength"] == 0.5
    assert made["thumbnail_url"].startswith(f"{API}/images/")  # links under the plugin's prefix
    status, thumbnail = cluster.http("GET", made["thumbnail_url"])
    assert status == 200 and thumbnail[:4] == b"RIFF"  # a WebP
    # the run's Asset event names the board
    [event] = [e for e in cluster.asset_events(DAG, run_id) if e.uri == f"invokeai://default/boards/{board}"]
    assert [image["image_name"] for image in event.extra["images"]] == [made["image_name"]]

    viewer = cluster.token(VIEWER_USER)
    status, body = cluster.http("GET", f"{API}/images?tenant=default", token=viewer)
    assert status == 403 and b"may not see tenant 'default'" in body
    assert cluster.http("GET", made["thumbnail_url"], token=viewer)[0] == 403
    assert cluster.http("GET", f"{API}/images?tenant=default", token="")[0] == 401
    status, page = cluster.http("GET", f"/invokeai/gallery/runs/{DAG}/{quote(run_id)}")
    assert status == 200 and made["image_name"].encode() in page
