"""Compiled graphs and workflows run end to end through Airflow (dag.test on SQLite) with tiny models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO_ROOT, SHARED_WORKFLOWS, edge, graph, node, png_pixels, task_states, uri_path

SD15_WORKFLOW = REPO_ROOT / "dags" / "workflows" / "sd15-text-to-image.json"
SMALL = ("model=tiny-sd1", "noise_width=64", "noise_height=64", "denoise_steps=3")


def write(tmp_path: Path, name: str, document: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def engine_outputs(document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    from invokeai_provider.core.context import RunContext
    from invokeai_provider.graph.engine import run_graph
    from invokeai_provider.graph.graph import Graph
    from invokeai_provider.storage.base import open_run_store

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        state = run_graph(Graph.from_dict(document), RunContext(store=open_run_store(tmp)))
        return state.leaf_outputs()


def record_values(run: dict[str, Any], task_id: str) -> list[dict[str, Any]]:
    """The values a task published, one dict per record, in iteration-path order."""
    records = [r for output in run["records"][task_id] for r in output["records"]]
    return [r["values"] for r in sorted(records, key=lambda r: r["path"])]


def nested_iterate_graph() -> dict[str, Any]:
    """outer [2, 3] → range(0, item) → inner iterate → ×10 → collect per outer → collect."""
    return graph(
        node("outer", "integer_collection", collection=[2, 3]),
        node("outer_it", "iterate"),
        node("inner_list", "range", start=0, step=1),
        node("inner_it", "iterate"),
        node("times", "mul", b=10),
        node("inner_col", "collect"),
        node("outer_col", "collect"),
        edges=[edge("outer", "collection", "outer_it", "collection"), edge("outer_it", "item", "inner_list", "stop"),
               edge("inner_list", "collection", "inner_it", "collection"), edge("inner_it", "item", "times", "a"),
               edge("times", "value", "inner_col", "item"), edge("inner_col", "collection", "outer_col", "item")])


@pytest.mark.parametrize("granularity,chunk_size", [("segment", 1), ("node", 2)])
def test_nested_iterate_collect_matches_engine(tmp_path: Path, airflow_run, granularity: str,
                                               chunk_size: int) -> None:
    document = nested_iterate_graph()
    expected = engine_outputs(document)["outer_col"][0]["collection"]
    assert expected == [[0, 10], [0, 10, 20]]
    run = airflow_run(write(tmp_path, "nested.json", document), granularity=granularity,
                      dag_id=f"nested_{granularity}", extra_env={"AIRFLOW__INVOKEAI__MAP_CHUNK_SIZE": str(chunk_size)})
    assert run["state"] == "success"
    assert record_values(run, "outer_col") == [{"outer_col.collection": expected}]
    assert record_values(run, "inner_col") == [{"inner_col.collection": [0, 10]},
                                               {"inner_col.collection": [0, 10, 20]}]
    # the inner segment ran for each (outer, inner) path, 2 + 3 items: one mapped instance per item, labelled by
    # it, or one per chunk of two items, labelled by their range
    times_task = "times"
    mapped = sorted((t["map_index"], t["label"]) for t in run["tasks"] if t["task_id"] == times_task)
    if chunk_size == 1:
        assert [m for m, _ in mapped] == [0, 1, 2, 3, 4]
        assert mapped[2][1].startswith("outer_it[1]=3, inner_it[0]=0")
    else:
        assert [m for m, _ in mapped] == [0, 1, 2]
        assert mapped[1][1].startswith("items 2-3: outer_it[1]=3, inner_it[0]=0")
        assert mapped[2][1] == "outer_it[1]=3, inner_it[2]=2"  # the last chunk has one item


def lazy_if_graph(condition: bool) -> dict[str, Any]:
    """if(cond) picks add(1, 2) or div(1, 0); the branch not taken must not run (div would fail)."""
    return graph(
        node("cond", "boolean", value=condition),
        node("good", "add", a=1, b=2),
        node("bad", "div", a=1, b=0),
        node("choose", "if"),
        node("after", "mul", b=100),
        edges=[edge("cond", "value", "choose", "condition"), edge("good", "value", "choose", "true_input"),
               edge("bad", "value", "choose", "false_input"), edge("choose", "value", "after", "a")])


@pytest.mark.parametrize("granularity", ["segment", "node"])
def test_lazy_if_skips_the_branch_not_taken(tmp_path: Path, airflow_run, granularity: str) -> None:
    document = lazy_if_graph(True)
    assert engine_outputs(document)["after"][0]["value"] == 300
    run = airflow_run(write(tmp_path, "lazy_if.json", document), granularity=granularity,
                      dag_id=f"lazy_if_{granularity}")
    assert run["state"] == "success"
    outputs = {k: v for k, v in run["outputs"].items()}
    [after] = [v["after"] for v in outputs.values() if "after" in v]
    assert after["value"] == 300
    states = task_states(run)
    if granularity == "node":
        assert states[("bad", -1)] == "skipped"  # Airflow skipped the branch task, so div(1, 0) never ran
        assert states[("choose", -1)] == "success"
        assert states[("good", -1)] == "success"


def test_lazy_if_taking_the_failing_branch_fails_the_run(tmp_path: Path, airflow_run) -> None:
    run = airflow_run(write(tmp_path, "lazy_if_false.json", lazy_if_graph(False)), granularity="node",
                      dag_id="lazy_if_false", expect_failure=True)
    assert run["returncode"] == 1
    assert "div" in run["stderr"] or "ZeroDivisionError" in run["stderr"] or "division" in run["stderr"]


def sd_prompt_list_graph(prompts: list[str]) -> dict[str, Any]:
    return graph(
        node("model", "main_model_loader",
             model={"key": "tiny-sd1", "hash": "", "name": "tiny-sd1", "base": "sd-1", "type": "main"}),
        node("prompts", "string_collection", collection=prompts),
        node("each", "iterate"),
        node("pos", "compel"),
        node("neg", "compel", prompt=""),
        node("noise", "noise", seed=7, width=64, height=64),
        node("denoise", "denoise_latents", steps=2, cfg_scale=5.0, scheduler="euler"),
        node("meta", "core_metadata", generation_mode="txt2img"),
        node("decode", "l2i"),
        edges=[edge("prompts", "collection", "each", "collection"), edge("each", "item", "pos", "prompt"),
               edge("each", "item", "meta", "positive_prompt"), edge("meta", "metadata", "decode", "metadata"),
               edge("model", "clip", "pos", "clip"), edge("model", "clip", "neg", "clip"),
               edge("model", "unet", "denoise", "unet"), edge("model", "vae", "decode", "vae"),
               edge("pos", "conditioning", "denoise", "positive_conditioning"),
               edge("neg", "conditioning", "denoise", "negative_conditioning"),
               edge("noise", "noise", "denoise", "noise"), edge("denoise", "latents", "decode", "latents")])


def test_prompt_list_of_five_makes_five_images_in_order(tmp_path: Path, airflow_run) -> None:
    from PIL import Image

    prompts = [f"a {c} lighthouse" for c in ("red", "green", "blue", "white", "black")]
    run = airflow_run(write(tmp_path, "prompts.json", sd_prompt_list_graph(prompts)), dag_id="prompt_list")
    assert run["state"] == "success"
    gpu = [t for t in run["tasks"] if t["queue"] == "gpu" and t["map_index"] >= 0]
    assert [t["map_index"] for t in gpu] == [0]  # the five prompts in one chunk ([invokeai] map_chunk_size 16)
    assert {t["task_id"] for t in gpu} == {"decode"}  # one fused GPU segment, mapped over the prompts
    # the negative prompt is outside the iteration: encoded once, in its own task, for every instance
    assert ("neg", -1) in task_states(run)
    images = sorted(run["images"], key=lambda r: r["item_index"])
    assert [r["item_index"] for r in images] == [0, 1, 2, 3, 4]
    assert [r["map_index"] for r in images] == [0] * 5
    for prompt, record in zip(prompts, images):
        with Image.open(uri_path(record["uri"])) as png:
            metadata = json.loads(png.info["invokeai_metadata"])
        assert metadata["positive_prompt"] == prompt
        assert record["metadata"]["positive_prompt"] == prompt
        assert (record["width"], record["height"]) == (64, 64)
    [label] = [t["label"] for t in gpu]
    assert label == "items 0-4: each[0]=a red lighthouse … each[4]=a black lighthouse"


def test_segment_and_node_granularity_make_identical_images(airflow_run) -> None:
    segment = airflow_run(SD15_WORKFLOW, *SMALL, "seed=5", dag_id="sd15_segment")
    by_node = airflow_run(SD15_WORKFLOW, *SMALL, "seed=5", granularity="node", dag_id="sd15_node")
    assert segment["state"] == by_node["state"] == "success"
    assert len([t for t in segment["tasks"]]) == 1
    assert len(by_node["tasks"]) >= 8  # one task per node
    gpu_operators = sorted(t["operator"] for t in by_node["tasks"] if t["queue"] == "gpu")
    assert gpu_operators == ["CompelOperator", "CompelOperator", "DenoiseLatentsOperator", "LatentsToImageOperator"]
    cpu_operators = {t["operator"] for t in by_node["tasks"] if t["queue"] == "default"}
    assert {"MainModelLoaderOperator", "IntegerOperator", "NoiseOperator"} <= cpu_operators
    [a], [b] = segment["images"], by_node["images"]
    assert png_pixels(a["uri"]) == png_pixels(b["uri"])
    assert a["uri"] != b["uri"]


def test_image_records_and_asset_events(airflow_run) -> None:
    from PIL import Image

    run = airflow_run(SD15_WORKFLOW, *SMALL, "seed=11", "positive_prompt=a quiet harbour", dag_id="sd15_records")
    [record] = run["images"]
    assert record["tenant"] == "default" and record["node_id"] == "decode"
    assert record["task_id"] == "sd1_5_text_to_image"
    with Image.open(uri_path(record["uri"])) as png:
        metadata = json.loads(png.info["invokeai_metadata"])
        assert "invokeai_workflow" in png.info and "invokeai_graph" in png.info
    assert metadata["positive_prompt"] == "a quiet harbour" and metadata["seed"] == 11
    [event] = run["asset_events"]
    assert event["asset"] == "invokeai://default/boards/none"
    assert [i["image_name"] for i in event["extra"]["images"]] == [record["image_name"]]
    assert event["extra"]["dag_id"] == "sd15_records"


def test_wrong_param_type_is_refused_before_any_task_runs(airflow_run, artifact_root: Path) -> None:
    result = airflow_run(SD15_WORKFLOW, *SMALL, "seed=\"not a number\"", dag_id="sd15_bad_conf",
                         expect_failure=True)
    assert result["returncode"] == 1
    assert "seed" in result["stderr"] and "no run was started" in result["stderr"]
    assert not (artifact_root / "default" / "runs" / "sd15_bad_conf").exists()


@pytest.mark.skipif(not SHARED_WORKFLOWS.is_dir(), reason="the shared InvokeAI workflows are not beside the repo")
@pytest.mark.parametrize("name,model", [("text-to-image-sd15.json", "tiny-sd1"), ("text-to-image-sdxl.json", "tiny-sdxl")])
def test_shared_workflows_run_through_airflow(airflow_run, name: str, model: str) -> None:
    from invokeai_provider.compiler.params import param_specs
    from invokeai_provider.graph.workflow import load_document

    path = SHARED_WORKFLOWS / name
    specs = param_specs(load_document(path.read_text()))
    sets = []
    exposed = set()
    for spec in specs:
        exposed.add((spec.node_id, spec.field_name))
        if spec.kind == "model":
            sets.append(f"{spec.name}={'tiny-sdxl-vae' if 'vae' in spec.name else model}")
        elif spec.field_name in ("width", "height"):
            sets.append(f"{spec.name}=64")
    # what the form does not expose is edited in the document itself: small sizes, two steps
    graph = load_document(path.read_text()).graph
    for n in graph.nodes:
        fields = {"denoise_latents": ("steps",), "noise": ("width", "height")}.get(graph.type_of(n), ())
        sets += [f"{n}.{f}={2 if f == 'steps' else 64}" for f in fields if (n, f) not in exposed]
    run = airflow_run(path, *sets, dag_id=path.stem.replace(".", "_"))
    assert run["state"] == "success"
    [image] = [r for r in run["images"] if not r["is_intermediate"]] or run["images"][:1]
    assert (image["width"], image["height"]) == (64, 64)
    assert png_pixels(image["uri"])
