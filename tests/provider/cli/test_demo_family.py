"""``demo --family``: the demo's inputs are found in each workflow by following its edges, and the SDXL demo runs
end to end through Airflow with the size and steps it is given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO_ROOT, png_pixels, uri_path, wf_edge, wf_node, workflow

from invokeai_provider.cli.demo import DEMO_FAMILIES, DEMO_INPUTS, WORKFLOWS, demo_sets
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

    path = WORKFLOWS / DEMO_FAMILIES[family].workflow
    values = {"prompt": "a tiny test", "seed": 9, "steps": 3, "width": 72, "height": 88, "model": "tiny-x"}
    sets = demo_sets(path, values)
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

    assert (fed("noise", "width"), fed("noise", "height"), fed("noise", "seed")) == (72, 88, 9)
    assert fed("denoise_latents", "steps") == 3
    assert conf[resolve_input(document, specs_of(document), DEMO_INPUTS["model"]).param] == "tiny-x"


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


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "INVOKEAI"))}


def test_readme_shows_the_demo_families() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    assert "invokeai-airflow demo [--family sd15|sdxl] [--size N] [--steps N]" in text
    assert "models install-tiny main --base sdxl" in text
