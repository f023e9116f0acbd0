"""``demo --family``: the demo's inputs are found in each workflow by following its edges, and the SDXL and FLUX
demos run end to end through Airflow with the size and steps they are given."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO_ROOT, png_pixels, uri_path, wf_edge, wf_node, workflow

from invokeai_provider.cli.demo import DEMO_FAMILIES, WORKFLOWS, demo_sets
from invokeai_provider.cli.demo_inputs import InputPath, Target, resolve_input, set_argument
from invokeai_provider.compiler.params import param_specs
from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.graph.workflow import Document, load_document


def load(doc: dict[str, Any]) -> Document:
    return load_document(json.dumps(doc))


def specs_of(document: Document) -> list:
    return param_specs(document, model_names=lambda node_type, field: [])


def noise_workflow(*extra_nodes: dict, edges: tuple = (), exposed: tuple = ()) -> Document:
    nodes = [wf_node("noise", "noise", seed=1, width=512, height=512), *extra_nodes]
    return load(workflow(nodes, list(edges), exposed=list(exposed)))


def test_an_exposed_noise_field_is_its_param() -> None:
    document = noise_workflow(exposed=({"nodeId": "noise", "fieldName": "width"},))
    [spec] = specs_of(document)
    assert resolve_input(document, [spec], InputPath("noise", "width")) == Target(spec.name, "noise", "width")


def test_a_primitive_feeding_the_field_is_followed_to_its_param() -> None:
    document = noise_workflow(wf_node("size", "integer", label="Size", value=512),
                              edges=(wf_edge("size", "value", "noise", "width"),),
                              exposed=({"nodeId": "size", "fieldName": "value"},))
    [spec] = specs_of(document)
    target = resolve_input(document, [spec], InputPath("noise", "width"))
    assert target == Target(spec.name, "size", "value")
    assert set_argument(target, 64) == f"{spec.name}=64"


def test_an_unexposed_field_is_set_on_the_node() -> None:
    document = noise_workflow(wf_node("size", "integer", value=512), edges=(wf_edge("size", "value", "noise", "width"),))
    assert resolve_input(document, [], InputPath("noise", "width")) == Target(None, "size", "value")
    assert resolve_input(document, [], InputPath("noise", "height")) == Target(None, "noise", "height")
    assert set_argument(Target(None, "noise", "height"), 64) == "noise.height=64"
    assert set_argument(Target("prompt", "p", "value"), "42") == 'prompt="42"'  # stays a string


def test_a_computed_input_cannot_be_set() -> None:
    document = noise_workflow(wf_node("double", "mul", a=256, b=2), edges=(wf_edge("double", "value", "noise", "width"),))
    with pytest.raises(InvokeAIProviderError, match=r"noise.width is computed by double.value"):
        resolve_input(document, [], InputPath("noise", "width"))
    with pytest.raises(InvokeAIProviderError, match="has 0 'denoise_latents' nodes, expected exactly one"):
        resolve_input(document, [], InputPath("denoise_latents", "steps"))


@pytest.mark.parametrize("family", sorted(DEMO_FAMILIES))
def test_each_demo_workflow_exposes_what_the_demo_sets(family: str) -> None:
    """Every demo input of the example workflows is a trigger-form Param, and setting those Params reaches the
    node inputs the demo means (checked on the graph the compiled task would run)."""
    from invokeai_provider.compiler.dags import load_compiled
    from invokeai_provider.execution.task_runtime import graph_with_params

    demo = DEMO_FAMILIES[family]
    path = WORKFLOWS / demo.workflow
    values = {"prompt": "a tiny test", "seed": 9, "steps": 3, "width": 80, "height": 96, "model": "tiny-x"}
    sets = demo_sets(path, values, demo.inputs)
    assert all("." not in s.partition("=")[0] for s in sets), sets  # all Params, no document edits
    conf = {name: json.loads(raw) for name, _, raw in (s.partition("=") for s in sets)}
    document = load_document(path.read_text())
    compiled = load_compiled(path)
    graph = graph_with_params(compiled, {k: v for k, v in conf.items() if k != "model"})

    def fed(node_type: str, field: str) -> Any:
        """The value arriving at a node input: the literal, or the literal of the primitive feeding it."""
        [node_id] = [n for n, node in graph["nodes"].items() if node["type"] == node_type]
        edge = next((e for e in graph["edges"] if e["destination"] == {"node_id": node_id, "field": field}), None)
        return graph["nodes"][node_id][field] if edge is None else graph["nodes"][edge["source"]["node_id"]][
            edge["source"]["field"]]

    def target(key: str) -> tuple[str, str]:
        return demo.inputs[key].node_type, demo.inputs[key].field

    assert (fed(*target("width")), fed(*target("height")), fed(*target("seed"))) == (80, 96, 9)
    assert fed(*target("steps")) == 3
    if family == "flux":
        assert fed("flux_text_encoder", "prompt") == "a tiny test"
    if family == "sd3":  # two prompt encoders: the one feeding the positive conditioning
        [denoise] = [n for n, node in graph["nodes"].items() if node["type"] == "sd3_denoise"]
        [source] = [e["source"]["node_id"] for e in graph["edges"]
                    if e["destination"] == {"node_id": denoise, "field": "positive_conditioning"}]
        prompt = next(e for e in graph["edges"] if e["destination"] == {"node_id": source, "field": "prompt"})
        assert graph["nodes"][prompt["source"]["node_id"]][prompt["source"]["field"]] == "a tiny test"
    if family == "cogview4":  # two prompt encoders: the one feeding the positive conditioning gets the prompt
        [denoise] = [n for n, node in graph["nodes"].items() if node["type"] == "cogview4_denoise"]
        [source] = [e["source"]["node_id"] for e in graph["edges"]
                    if e["destination"] == {"node_id": denoise, "field": "positive_conditioning"}]
        prompt = next(e for e in graph["edges"] if e["destination"] == {"node_id": source, "field": "prompt"})
        assert graph["nodes"][prompt["source"]["node_id"]][prompt["source"]["field"]] == "a tiny test"
    assert conf[resolve_input(document, specs_of(document), demo.inputs["model"]).param] == "tiny-x"


def test_demo_sdxl_runs_end_to_end(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("invokeai-airflow")
    args = [str(exe), "demo", "--family", "sdxl", "--size", "64", "--steps", "2", "--model-root",
            str(tmp_path / "models"), "--artifacts", str(tmp_path / "art")]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600,
                            env={**_clean_env(), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "building the tiny random-weight sdxl main model 'tiny-sdxl'" in result.stderr
    [image] = json.loads(result.stdout)
    assert (image["width"], image["height"]) == (64, 64)
    assert "Denoising step 2/2" in result.stderr and "Denoising step 3/" not in result.stderr
    assert "task sdxl_text_to_image: success (queue gpu)" in result.stderr
    # what Airflow prints agrees with the summary, and the board assets raise no warnings
    assert "queue='default'" not in result.stderr and "queue='gpu'" in result.stderr
    assert "inactive AssetModel" not in result.stderr and "cannot create asset event" not in result.stderr
    assert "[warning" not in result.stderr.split("running DAG", 1)[1]  # the Airflow run warns about nothing
    assert uri_path(image["uri"]).is_file() and len(set(png_pixels(image["uri"]))) > 1


def test_demo_flux_runs_end_to_end(tmp_path: Path) -> None:
    """The FLUX demo builds tiny-flux and runs flux-text-to-image.json through Airflow at the size and steps given;
    the image's metadata records them (the workflow feeds them by edges)."""
    exe = Path(sys.executable).with_name("invokeai-airflow")
    args = [str(exe), "demo", "--family", "flux", "--size", "80", "--steps", "3", "--seed", "7", "--model-root",
            str(tmp_path / "models"), "--artifacts", str(tmp_path / "art")]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600,
                            env={**_clean_env(), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "building the tiny random-weight flux main model 'tiny-flux'" in result.stderr
    [image] = json.loads(result.stdout)
    assert (image["width"], image["height"]) == (80, 80)
    assert "Denoising step 3/3" in result.stderr and "Denoising step 4/" not in result.stderr
    assert "task flux_text_to_image: success (queue gpu)" in result.stderr
    assert "[warning" not in result.stderr.split("running DAG", 1)[1]
    assert uri_path(image["uri"]).is_file() and len(set(png_pixels(image["uri"]))) > 1
    from PIL import Image

    with Image.open(uri_path(image["uri"])) as png:
        metadata = json.loads(png.info["invokeai_metadata"])
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "width", "height")} == {
        "generation_mode": "flux_txt2img", "seed": 7, "steps": 3, "width": 80, "height": 80}
    assert metadata["model"]["name"] == "tiny-flux"


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "INVOKEAI"))}


def test_readme_shows_the_demo_families() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    synopsis = re.search(r"invokeai-airflow demo \[--family ([a-z0-9|-]+)\] \[--size N\] \[--steps N\]", text)
    assert synopsis and set(synopsis.group(1).split("|")) == set(DEMO_FAMILIES)
    assert "demo --family cogview4" in text and "models install-tiny main --base cogview4" in text
    assert "demo --family sd3" in text and "models install-tiny main --base sd-3" in text
    assert "models install-tiny main --base sdxl" in text
    assert "demo --family flux" in text and "models install-tiny vae --base flux" in text
