"""A ControlNet workflow on the local cluster: the example SDXL MultiDiffusion upscale DAG (an uploaded image
enlarged 2x, refined tile by tile with an SDXL ControlNet), with the tiny SDXL main and ControlNet installed into
the cluster's S3 model root as `models install-tiny` installs them, triggered over REST with small tiles; its
denoise runs on the gpu worker, the 2x image lands in the tenant's gallery.

(The SD1.5 control workflows of tests/airflow/workflows/ load core models — Depth Anything, ESRGAN, mediapipe's
face landmarker — from a local model root, which an S3 root is not; this one needs only registered models.)"""

from __future__ import annotations

import io
import json
from urllib.parse import quote

from cluster_client import ClusterClient, install_models, run_on_gpu_worker

DAG = "sdxl-multidiffusion-upscale"
API = "/invokeai/api"
INSTALL = ("from invokeai_provider.models.model_manager.registry import ModelRegistry\n"
           "from invokeai_provider.models.testing.tiny_install import install_tiny\n"
           "registry = ModelRegistry(None)\n"
           "for kind in ('main', 'controlnet'):\n"
           "    install_tiny(registry, kind, 'sdxl')\n")


def png(size: int = 48) -> bytes:
    import numpy as np
    from PIL import Image

    cells = np.random.default_rng(4).integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.kron(cells, np.ones((8, 8, 1), np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


def test_sdxl_multidiffusion_upscale_with_a_controlnet_runs_on_the_gpu_worker(cluster: ClusterClient) -> None:
    install_models(cluster, INSTALL)
    status, body = cluster.http("POST", f"{API}/images/upload?tenant=default", png(), content_type="image/png")
    assert status == 201, body
    uploaded = json.loads(body)["image_name"]

    conf = {"image": uploaded, "tile_width": 64, "tile_height": 64, "tile_overlap": 16, "steps": 2, "seed": 3}
    run_id, _ = run_on_gpu_worker(cluster, DAG, conf)

    status, body = cluster.http("GET", f"{API}/images?tenant=default&dag_id={DAG}&run_id={quote(run_id)}")
    assert status == 200, body
    [made] = [item for item in json.loads(body)["items"] if item["node_id"] == "decode"]
    assert (made["width"], made["height"]) == (96, 96)  # 2x the 48 px upload
    status, body = cluster.http("GET", f"{API}/images/{made['image_name']}?tenant=default")
    assert status == 200, body
    graph = json.loads(body)["graph"]
    assert graph["nodes"]["input"]["image"] == {"image_name": uploaded}
    assert graph["nodes"]["denoise"]["tile_width"] == 64 and graph["nodes"]["control"]["control_model"]["name"] == \
        "tiny-sdxl-controlnet"
