"""Small builders for graph dicts and saved workflows in InvokeAI's JSON shape, and test helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from invokeai_provider.graph.graph import Graph

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_WORKFLOWS = REPO_ROOT.parent / "shared" / "invokeai-workflows"


def node(node_id: str, node_type: str, **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, **fields}


def edge(source: str, source_field: str, destination: str, destination_field: str) -> dict[str, Any]:
    return {"source": {"node_id": source, "field": source_field},
            "destination": {"node_id": destination, "field": destination_field}}


def graph(*nodes: dict[str, Any], edges: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"id": "g", "nodes": {n["id"]: n for n in nodes}, "edges": list(edges)}


def sd1_graph(model: str = "tiny-sd1", *, prompt: str = "a (red)++ cat", seed: int = 7, steps: int = 3,
              scheduler: str = "euler", size: int = 64, extra_nodes: dict | None = None,
              extra_edges: list | None = None, denoise: dict | None = None) -> dict:
    """A text-to-image graph (loader, two compel prompts, noise, denoise, l2i) for an SD model."""
    nodes = {
        "model": {"type": "main_model_loader", "model": model},
        "pos": {"type": "compel", "prompt": prompt},
        "neg": {"type": "compel", "prompt": ""},
        "noise": {"type": "noise", "seed": seed, "width": size, "height": size},
        "denoise": {"type": "denoise_latents", "steps": steps, "cfg_scale": 7.5, "scheduler": scheduler,
                    **(denoise or {})},
        "decode": {"type": "l2i"},
        **(extra_nodes or {}),
    }
    edges = [edge("model", "clip", "pos", "clip"), edge("model", "clip", "neg", "clip"),
             edge("model", "unet", "denoise", "unet"), edge("pos", "conditioning", "denoise", "positive_conditioning"),
             edge("neg", "conditioning", "denoise", "negative_conditioning"), edge("noise", "noise", "denoise", "noise"),
             edge("denoise", "latents", "decode", "latents"), edge("model", "vae", "decode", "vae"),
             *(extra_edges or [])]
    return {"id": "t2i", "nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": edges}


# --- saved workflows (meta 3.0.0 / 4.0.0) ---------------------------------------------------------------


def flux_graph(model: dict[str, Any], *, prompt: str = "a lighthouse in a storm, oil painting", seed: int = 11,
               steps: int = 2, width: int = 32, height: int = 48, guidance: float = 3.5,
               loader: Optional[dict[str, Any]] = None, **denoise: Any) -> dict[str, Any]:
    """InvokeAI's FLUX text-to-image graph: flux_model_loader (``loader``: more of its fields, the separate parts),
    flux_text_encoder, flux_denoise (``denoise``: more of its fields) and flux_vae_decode."""
    return graph(
        node("load", "flux_model_loader", model=model, **(loader or {})), node("prompt", "flux_text_encoder",
                                                                                prompt=prompt),
        node("denoise", "flux_denoise", seed=seed, num_steps=steps, width=width, height=height, guidance=guidance,
             **denoise),
        node("decode", "flux_vae_decode"),
        edges=[edge("load", "clip", "prompt", "clip"), edge("load", "t5_encoder", "prompt", "t5_encoder"),
               edge("load", "max_seq_len", "prompt", "t5_max_seq_len"),
               edge("load", "transformer", "denoise", "transformer"),
               edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
               edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")])


def wf_node(node_id: str, node_type: str, label: str = "", use_cache: bool = True,
            **inputs: Any) -> dict[str, Any]:
    return {
        "id": node_id, "type": "invocation", "position": {"x": 0, "y": 0},
        "data": {"id": node_id, "type": node_type, "version": "1.0.0", "nodePack": "invokeai", "label": label,
                 "notes": "", "isOpen": True, "isIntermediate": False, "useCache": use_cache,
                 "inputs": {name: ({"name": name, "label": f"{name} label"} if value is ... else
                                   {"name": name, "label": f"{name} label", "value": value})
                            for name, value in inputs.items()}},
    }


def wf_edge(source: str, handle: str, target: str, target_handle: str, kind: str = "default") -> dict[str, Any]:
    return {"id": f"{source}-{target}-{target_handle}", "type": kind, "source": source, "sourceHandle": handle,
            "target": target, "targetHandle": target_handle}


def workflow(nodes: list, edges: list, version: str = "3.0.0", exposed: Optional[list] = None,
             form: Optional[dict] = None) -> dict[str, Any]:
    doc = {"id": "wf-1", "name": "Test workflow", "author": "tests", "description": "d", "version": "1", "contact": "",
           "tags": "", "notes": "n", "meta": {"version": version, "category": "user"},
           "exposedFields": exposed or [], "nodes": nodes, "edges": edges}
    if form is not None:
        doc["form"] = form
    return doc


def graph_of(nodes: dict[str, dict[str, Any]], edges: list[dict[str, Any]] | None = None) -> "Graph":
    """A parsed graph from nodes keyed by id (their dicts without the id)."""
    from invokeai_provider.graph.graph import Graph

    return Graph.from_dict({"nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": edges or []})


def run_nodes(run: Any, nodes: dict[str, dict[str, Any]], edges: list[dict[str, Any]] | None = None) -> Any:
    """Validates and runs the graph; returns the execution state."""
    from invokeai_provider.graph.engine import run_graph

    return run_graph(graph_of(nodes, edges), run)


def only_output(run: Any, node: dict[str, Any]) -> Any:
    """Runs one node alone and returns its single output."""
    [out] = run_nodes(run, {"n": node}).outputs_of("n")
    return out


def task_states(run: dict[str, Any]) -> dict[tuple[str, int], str]:
    return {(t["task_id"], t["map_index"]): t["state"] for t in run["tasks"]}


def uri_path(uri: str) -> Path:
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(uri).path))


def png_pixels(uri: str) -> bytes:
    from PIL import Image

    with Image.open(uri_path(uri)) as image:
        return image.convert("RGB").tobytes()


def put_image(run: Any, name: str, image: Any, mode: str | None = None) -> dict[str, str]:
    """Stores an image (PIL, or an array H x W [x C]: bool, or uint8 values) as a PNG in the run's store, as
    an earlier node would have; returns its ImageField dict."""
    import io

    import numpy as np
    from PIL import Image

    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        image = Image.fromarray(array if array.dtype == bool or mode else array.astype(np.uint8), mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    run.store.write("images", name, buffer.getvalue())
    return {"image_name": name}


def stored_image(run: Any, output: Any) -> Any:
    """The PIL image an ImageOutput (or an ImageField) names in the run's store, read fully."""
    import io

    from PIL import Image

    field = getattr(output, "image", output)
    image = Image.open(io.BytesIO(run.store.read("images", field.image_name)))
    image.load()
    return image


def conn_json(server: Any, **overrides: Any) -> str:
    """An Airflow connection (JSON) to a SeaweedFS server (`invokeai_provider.cluster.seaweed.SeaweedServer`)."""
    conn = {"conn_type": "invokeai_s3", "login": server.access_key, "password": server.secret_key,
            "extra": {"endpoint_url": server.endpoint_url, "region_name": "us-east-1"}}
    conn.update(overrides)
    return json.dumps(conn)


def run_image_records(store: Any) -> list[dict[str, Any]]:
    """The library records of the images a run (its RunStore) saved, ordered by image name."""
    from invokeai_provider.storage.library.images import ImageLibrary

    library = ImageLibrary(store.backend, store.tenant)
    records = [library.get(name) for name, _ in library.record_versions()]
    return sorted((r for r in records if (r.get("dag_id"), r.get("run_id")) == (store.dag_id, store.run_id)),
                  key=lambda r: r["image_name"])


def block_picture(rng: Any, cell: int = 8) -> Any:
    """A picture of 4 x 4 random colour blocks of ``cell`` pixels (uint8 array); ``rng`` a seed or a numpy
    Generator (then the picture is its next draw)."""
    import numpy as np

    blocks = np.random.default_rng(rng).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((cell, cell, 1), np.uint8))


def png_metadata(uri: str) -> dict[str, Any]:
    """The ``invokeai_metadata`` a PNG (a file URI) carries."""
    from PIL import Image

    with Image.open(uri_path(uri)) as png:
        return json.loads(png.info["invokeai_metadata"])


def small_example(path: Path, loader: str, model: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """An example workflow with ``model`` on its ``loader`` node and ``values`` set on its primitive nodes (by node
    id): the example at a small size and few steps."""
    document = json.loads(path.read_text())
    for workflow_node in document["nodes"]:
        data = workflow_node["data"]
        if data["id"] in values:
            data["inputs"]["value"]["value"] = values[data["id"]]
        if data["id"] == loader:
            data["inputs"]["model"]["value"] = model
    return document


def run_demo(cwd: Path, family: str, model: str, *, size: int, steps: int, seed: int = 7) -> tuple[str, dict[str, Any]]:
    """``invokeai-airflow demo --family <family>`` in a clean environment (no AIRFLOW/INVOKEAI settings), checked: it
    builds the tiny ``model``, runs ``steps`` steps and makes one ``size`` x ``size`` image with content whose
    metadata names the model. Returns the demo's stderr (its log) and the image's metadata."""
    import os
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("invokeai-airflow")
    args = [str(exe), "demo", "--family", family, "--size", str(size), "--steps", str(steps), "--seed", str(seed),
            "--model-root", str(cwd / "models"), "--artifacts", str(cwd / "art")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "INVOKEAI"))}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=600,
                            env={**env, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"building the tiny random-weight {model.removeprefix('tiny-')} main model '{model}'" in result.stderr
    [image] = json.loads(result.stdout)
    assert (image["width"], image["height"]) == (size, size)
    assert f"Denoising step {steps}/{steps}" in result.stderr and f"Denoising step {steps + 1}/" not in result.stderr
    assert uri_path(image["uri"]).is_file() and len(set(png_pixels(image["uri"]))) > 1
    metadata = png_metadata(image["uri"])
    assert metadata["model"]["name"] == model
    return result.stderr, metadata
