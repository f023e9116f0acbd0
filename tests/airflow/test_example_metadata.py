"""The example text-to-image workflows record in each PNG what the run used: their metadata node gets steps,
size, CFG scale, scheduler, seed, prompts and model by edges from the values the generation takes, never as
literals of its own (which went stale: a 64x64 4-step image recorded 512x512 and 30 steps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest

from helpers import REPO_ROOT, uri_path

WORKFLOWS = REPO_ROOT / "dags" / "workflows"
TEXT_TO_IMAGE = ["sd15-text-to-image.json", "sdxl-text-to-image.json", "prompt-list-batch.json"]
LOADERS = ("main_model_loader", "sdxl_model_loader")
PROMPT_NODES = ("compel", "sdxl_compel_prompt")


# --- the wiring, without running anything --------------------------------------------------------------


class Wiring:
    """Who feeds what in a workflow's graph."""

    def __init__(self, path: Path) -> None:
        from invokeai_provider.graph.workflow import load_document

        self.raw = json.loads(path.read_text())
        self.graph = load_document(path.read_text(), str(path)).graph

    def of_type(self, *types: str) -> str:
        [node_id] = [n for n, node in self.graph.nodes.items() if node.get_type() in types]
        return node_id

    def source(self, node_id: str, field: str) -> Optional[tuple[str, str]]:
        edges = self.graph.input_edges(node_id, field)
        assert len(edges) <= 1, (node_id, field)
        return (edges[0].source.node_id, edges[0].source.field) if edges else None

    def prompt_node(self, conditioning: str) -> str:
        source = self.source(self.of_type("denoise_latents"), conditioning)
        assert source is not None
        return source[0]

    def raw_inputs(self, node_id: str) -> dict[str, Any]:
        [node] = [n for n in self.raw["nodes"] if n["id"] == node_id]
        return node["data"]["inputs"]


@pytest.mark.parametrize("name", TEXT_TO_IMAGE)
def test_metadata_is_fed_by_what_the_generation_uses(name: str) -> None:
    wiring = Wiring(WORKFLOWS / name)
    meta, denoise, noise = (wiring.of_type("core_metadata"), wiring.of_type("denoise_latents"),
                            wiring.of_type("noise"))
    uses = {
        "steps": wiring.source(denoise, "steps"),
        "cfg_scale": wiring.source(denoise, "cfg_scale"),
        "seed": wiring.source(noise, "seed"),
        "positive_prompt": wiring.source(wiring.prompt_node("positive_conditioning"), "prompt"),
        "negative_prompt": wiring.source(wiring.prompt_node("negative_conditioning"), "prompt"),
        "model": wiring.source(wiring.of_type(*LOADERS), "model"),
    }
    for field, used in uses.items():
        assert used is not None, f"{name}: the generation's {field} is a literal, so the metadata cannot follow it"
        assert wiring.source(meta, field) == used, f"{name}: metadata {field}"
    for field in ("width", "height"):  # the noise's own size output, or what feeds the noise
        assert wiring.source(meta, field) in {(noise, field), wiring.source(noise, field)}, f"{name}: {field}"
    # core_metadata.scheduler is a str, which InvokeAI does not connect a scheduler to: a linked item adds it
    linked = wiring.of_type("metadata_item_linked")
    assert wiring.graph.nodes[linked].label == "scheduler"
    assert wiring.source(linked, "value") == wiring.source(denoise, "scheduler") is not None
    assert wiring.source(linked, "metadata") == (meta, "metadata")
    assert wiring.source(wiring.of_type("l2i"), "metadata") == (linked, "metadata")
    # no stale literals left in the file either
    stale = {f: spec["value"] for f, spec in wiring.raw_inputs(meta).items() if "value" in spec}
    assert stale == {"generation_mode": "sdxl_txt2img" if "sdxl" in name else "txt2img"}


# --- a run through Airflow -------------------------------------------------------------------------------


def png_chunks(record: dict[str, Any]) -> tuple[tuple[int, int], dict[str, str]]:
    from PIL import Image

    with Image.open(uri_path(record["uri"])) as image:
        return image.size, dict(image.text)


def test_sd15_png_metadata_is_what_the_run_used(airflow_run, tiny_registry) -> None:
    """Every setting away from the workflow's defaults (512x512, 30 steps, CFG 7.5, DPM++ 2M Karras, seed 42), and
    an empty negative prompt (compel encodes "")."""
    from invokeai_provider import __version__

    prompt = "a tin robot reading a newspaper"
    run = airflow_run(WORKFLOWS / "sd15-text-to-image.json", "model=tiny-sd1", "noise_width=64", "noise_height=72",
                      "denoise_steps=3", "seed=987", "denoise_scheduler=euler_a", "denoise_cfg_scale=4.5",
                      f"positive_prompt={prompt}", "negative_prompt=", dag_id="sd15_metadata")
    assert run["state"] == "success"
    [image] = run["images"]
    size, chunks = png_chunks(image)
    assert size == (64, 72)
    metadata = json.loads(chunks["invokeai_metadata"])
    model = tiny_registry.find("tiny-sd1")
    assert metadata == {
        "generation_mode": "txt2img",
        "positive_prompt": prompt,
        "negative_prompt": "",
        "width": 64,
        "height": 72,
        "seed": 987,
        "steps": 3,
        "cfg_scale": 4.5,
        "scheduler": "euler_a",
        "model": {"key": model.key, "hash": model.hash, "name": "tiny-sd1", "base": "sd-1", "type": "main"},
        "app_version": __version__,
    }
    assert image["metadata"] == metadata
    # the graph the image came from: the same values went into the generation
    graph = json.loads(chunks["invokeai_graph"])
    nodes, edges = graph["nodes"], {(e["destination"]["node_id"], e["destination"]["field"]): e["source"]["node_id"]
                                    for e in graph["edges"]}
    assert nodes[edges[("denoise", "steps")]]["value"] == 3
    assert nodes[edges[("denoise", "cfg_scale")]]["value"] == 4.5
    assert nodes[edges[("denoise", "scheduler")]]["scheduler"] == "euler_a"
    assert nodes[edges[("noise", "seed")]]["value"] == 987
    assert (nodes["noise"]["width"], nodes["noise"]["height"]) == (64, 72)
    assert nodes[edges[("negative_cond", "prompt")]]["value"] == ""
    assert nodes[edges[("model_loader", "model")]]["model"]["key"] == model.key
