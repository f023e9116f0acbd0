"""Usage records (what a task used, stored per tenant) and the tenant checks that keep a run in its prefix."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import edge, graph, node

from invokeai_provider.cli.app import main as cli_main
from invokeai_provider.compiler.params import param_specs
from invokeai_provider.compiler.tenant_param import tenant_schema
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore
from invokeai_provider.execution.graph_runs import TaskEnvironment
from invokeai_provider.execution.task_runtime import run_single_node, run_task
from invokeai_provider.execution.tenants import (
    ARTIFACT_NAME_PATTERN,
    ArtifactReferenceError,
    InvalidTenantError,
    check_references,
    check_tenant,
    resolve_tenant,
)
from invokeai_provider.execution.usage import (
    UsageMeter,
    read_usage,
    summarize,
    usage_key,
    write_usage,
)
from invokeai_provider.graph.workflow import load_document

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


# --- tenants --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "acme", "a", "team-7_gpu", "0" * 63])
def test_valid_tenants(name: str) -> None:
    assert check_tenant(name) == name


@pytest.mark.parametrize("name,why", [
    ("../evil", "contains '..'"), ("..", "contains '..'"), ("a/b", "path separator"), ("a\\b", "path separator"),
    ("/abs", "absolute path"), ("", "empty"), ("Acme", "outside the allowed set"), ("a" * 64, "64 characters"),
    ("-acme", "does not start with a letter or digit"), ("ac me", "outside the allowed set"),
])
def test_invalid_tenants_are_refused_naming_the_field_and_why(name: str, why: str) -> None:
    with pytest.raises(InvalidTenantError, match="conf tenant") as caught:
        check_tenant(name, field="conf tenant")
    assert why in str(caught.value) and "[a-z0-9]" in str(caught.value)
    assert caught.value.field == "conf tenant"
    with pytest.raises(InvalidTenantError, match="expected a string"):
        check_tenant(7)


def test_resolve_tenant_prefers_params_then_conf_then_default() -> None:
    assert resolve_tenant({"tenant": "acme"}, {"tenant": "other"}, "default") == "acme"
    assert resolve_tenant({}, {"tenant": "other"}, "default") == "other"
    assert resolve_tenant({"tenant": None}, None, "house") == "house"
    assert resolve_tenant(None, None, None) == "default"
    with pytest.raises(InvalidTenantError, match=r"params\.tenant '\.\./evil' contains '\.\.'"):
        resolve_tenant({"tenant": "../evil"}, None, "default")
    with pytest.raises(InvalidTenantError, match="conf tenant 'a/b'"):
        resolve_tenant({}, {"tenant": "a/b"}, "default")
    with pytest.raises(InvalidTenantError, match=r"\[invokeai\] default_tenant"):
        resolve_tenant({}, {}, "Bad Tenant")


def test_tenant_param_schema_and_a_bad_configured_default() -> None:
    schema = tenant_schema("house")
    assert schema["default"] == "house" and schema["section"] == "Run" and schema["type"] == "string"
    assert schema["pattern"] == "^[a-z0-9][a-z0-9_-]{0,62}$" and schema["title"] == "Tenant"
    with pytest.raises(InvalidTenantError, match=r"\[invokeai\] default_tenant"):
        tenant_schema("../evil")


def _exposing_workflow(label: str) -> dict[str, Any]:
    def wf_node(node_id: str, node_type: str, node_label: str, **inputs: Any) -> dict[str, Any]:
        return {"id": node_id, "type": "invocation", "position": {"x": 0, "y": 0},
                "data": {"id": node_id, "type": node_type, "version": "1.0.0", "label": node_label, "notes": "",
                         "isOpen": True, "isIntermediate": False, "useCache": True,
                         "inputs": {k: {"name": k, "label": "", "value": v} for k, v in inputs.items()}}}

    return {"name": "collision", "meta": {"version": "3.0.0"}, "nodes": [
        wf_node("t", "string", label, value="x"),
        wf_node("img", "image", "Input image", image={"image_name": "a.png"})],
        "edges": [], "exposedFields": [{"nodeId": "t", "fieldName": "value"}, {"nodeId": "img", "fieldName": "image"}]}


def test_an_exposed_field_named_tenant_is_renamed() -> None:
    specs = {s.name: s for s in param_specs(load_document(json.dumps(_exposing_workflow("Tenant"))))}
    assert "tenant" not in specs
    assert specs["tenant_2"].node_id == "t" and specs["tenant_2"].schema["title"] == "Tenant"


def test_image_params_accept_only_a_name_in_the_run() -> None:
    from airflow.sdk.exceptions import ParamValidationError

    from invokeai_provider.compiler.params import airflow_params

    specs = param_specs(load_document(json.dumps(_exposing_workflow("Name"))))
    [image] = [s for s in specs if s.kind == "image"]
    assert image.schema["pattern"] == ARTIFACT_NAME_PATTERN
    param = airflow_params([image])[image.name]
    assert param.resolve("decode-0.png") == "decode-0.png"
    for bad in ("../other/x.png", "acme/runs/d/r/images/x.png", "/etc/passwd", "s3://bucket/x.png",
                "file:///tmp/x.png", ".."):
        with pytest.raises(ParamValidationError):
            param.resolve(bad)


@pytest.mark.parametrize("value", [
    {"image_name": "../../other/runs/d/r/images/x.png"}, {"image_name": "other/runs/d/r/images/x.png"},
    {"image_name": "/etc/passwd"}, {"image_name": "s3://bucket/other/x.png"}, {"image_name": ".."},
    {"image_name": ""},
])
def test_check_references_refuses_paths_uris_and_other_tenants(value: dict[str, str]) -> None:
    doc = graph(node("img", "image", image=value))
    with pytest.raises(ArtifactReferenceError, match="node img field image.image_name") as caught:
        check_references(doc, "acme/runs/d/r")
    assert "outside this run's store (acme/runs/d/r/)" in str(caught.value)
    assert caught.value.node_id == "img"


def test_check_references_looks_inside_lists_and_nested_fields() -> None:
    nested = graph(node("c", "image_collection", images=[{"image_name": "ok.png"}, {"image_name": "x/../../y.png"}]))
    with pytest.raises(ArtifactReferenceError, match=r"node c field images\[1\]\.image_name"):
        check_references(nested, "acme/runs/d/r")
    mask = graph(node("d", "denoise_latents", denoise_mask={"mask_name": "ok", "masked_latents_name": "../x"}))
    with pytest.raises(ArtifactReferenceError, match=r"node d field denoise_mask\.masked_latents_name"):
        check_references(mask, "acme/runs/d/r")
    fine = graph(node("img", "image", image={"image_name": "decode_0.1-0.png"}),
                 node("lat", "latents", latents={"latents_name": "m0.denoise-0", "seed": None}))
    check_references(fine, "acme/runs/d/r")


def test_a_run_given_an_image_outside_its_store_fails_before_any_node_runs(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    env = TaskEnvironment(dag_id="d", run_id="r", task_id="img", artifact_root=root.as_uri(), tenant="acme")
    for name in ("../../other/runs/d/r/images/x.png", "other/runs/d/r/images/x.png", "file:///etc/passwd"):
        with pytest.raises(ArtifactReferenceError, match="points outside this run's store"):
            run_single_node(_node_class("image"), "img", {"image": {"image_name": name}}, env)
    with pytest.raises(ArtifactReferenceError, match="latents.latents_name"):
        run_single_node(_node_class("latents"), "lat", {"latents": {"latents_name": "../x"}}, env)
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))
    # a name in the run's own store is read
    from PIL import Image
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buffer, format="PNG")
    RunStore(LocalArtifactBackend(root), tenant="acme", dag_id="d", run_id="r").write("images", "in.png",
                                                                                       buffer.getvalue())
    meter = UsageMeter()
    env.usage = meter
    output, _ = run_single_node(_node_class("image"), "img", {"image": {"image_name": "in.png"}}, env)
    assert (output["width"], output["height"]) == (8, 6)
    assert meter.nodes == 1 and meter.node_types == {"image": 1} and meter.gpu_seconds == 0


def test_a_bad_tenant_in_the_task_environment_is_refused(tmp_path: Path) -> None:
    env = TaskEnvironment(dag_id="d", run_id="r", task_id="n", artifact_root=tmp_path.as_uri(), tenant="../evil")
    with pytest.raises(InvalidTenantError, match="contains '..'"):
        run_single_node(_node_class("add"), "n", {"a": 1, "b": 2}, env)
    assert not any(tmp_path.iterdir())


def _node_class(node_type: str) -> Any:
    from invokeai_provider.core.registry import InvocationRegistry, load_node_packs

    load_node_packs()
    return InvocationRegistry.get_invocation_class(node_type)


# --- the meter on a real run -------------------------------------------------------------------------


def sd_graph(scheduler: str, steps: int) -> dict[str, Any]:
    return graph(
        node("model", "main_model_loader",
             model={"key": "tiny-sd1", "hash": "", "name": "tiny-sd1", "base": "sd-1", "type": "main"}),
        node("pos", "compel", prompt="a red house"),
        node("neg", "compel", prompt=""),
        node("noise", "noise", seed=3, width=64, height=64),
        node("denoise", "denoise_latents", steps=steps, cfg_scale=5.0, scheduler=scheduler),
        node("decode", "l2i", is_intermediate=False),
        edges=[edge("model", "clip", "pos", "clip"), edge("model", "clip", "neg", "clip"),
               edge("model", "unet", "denoise", "unet"), edge("model", "vae", "decode", "vae"),
               edge("pos", "conditioning", "denoise", "positive_conditioning"),
               edge("neg", "conditioning", "denoise", "negative_conditioning"),
               edge("noise", "noise", "denoise", "noise"), edge("denoise", "latents", "decode", "latents")])


def test_meter_counts_steps_that_ran_gpu_seconds_images_and_models(tmp_path: Path, tiny_registry) -> None:
    from invokeai_provider.compiler.dags import load_compiled

    # Heun is second order: 2 steps asked for, 3 UNet steps run; the record says what ran
    compiled = load_compiled(sd_graph("heun", 2), model_names=None)
    [task] = compiled.plan.tasks
    meter = UsageMeter()
    env = TaskEnvironment(dag_id="sd", run_id="r1", task_id=task.task_id, artifact_root=(tmp_path / "a").as_uri(),
                          model_root=tiny_registry.root.as_uri(), tenant="acme", usage=meter)
    output, _ = run_task(compiled, env)
    assert len(output["images"]) == 1
    assert meter.steps == 3
    assert meter.images == 1 and meter.intermediate_images == 0
    assert meter.nodes == 6 and meter.node_types["compel"] == 2
    assert 0 < meter.gpu_seconds < meter.node_seconds  # the loader and noise nodes are not GPU nodes
    [model] = meter.models.values()
    assert model["name"] == "tiny-sd1" and model["base"] == "sd-1" and model["type"] == "main"
    assert {"unet", "vae", "text_encoder", "tokenizer"} <= set(model["submodels"])
    record = meter.record(tenant="acme", dag_id="sd", run_id="r1", task_id=task.task_id, map_index=None,
                          try_number=1, hostname="h", started=T0, ended=T0 + timedelta(seconds=9))
    assert record["steps"] == 3 and record["models"][0]["key"] == model["key"]
    assert json.loads(json.dumps(record)) == record


# --- storing and summing ---------------------------------------------------------------------------------


def usage(dag_id: str, run_id: str, task_id: str, *, map_index: Any = None, try_number: int = 1, images: int = 1,
          steps: int = 10, gpu: float = 2.5, started: datetime = T0, models: tuple[str, ...] = ("tiny-sd1",),
          tenant: str = "acme") -> dict[str, Any]:
    meter = UsageMeter()
    meter.images, meter.steps, meter.gpu_seconds, meter.node_seconds, meter.nodes = images, steps, gpu, gpu + 1, 3
    for name in models:
        meter.models[f"key-{name}"] = {"key": f"key-{name}", "name": name, "base": "sd-1", "type": "main",
                                       "submodels": ["unet"]}
    return meter.record(tenant=tenant, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index,
                        try_number=try_number, hostname="worker-1", started=started,
                        ended=started + timedelta(seconds=5))


def test_usage_key_layout() -> None:
    assert usage_key("acme", "sd15", "manual__2025-06-01T12:00:00+00:00", "decode") == \
        "acme/usage/sd15/manual__2025-06-01T12:00:00+00:00/decode.json"
    assert usage_key("acme", "sd15", "r", "decode", 3) == "acme/usage/sd15/r/decode-3.json"
    assert usage_key("acme", "sd15", "r", "decode", -1) == "acme/usage/sd15/r/decode.json"
    with pytest.raises(InvalidTenantError):
        usage_key("../evil", "sd15", "r", "decode")


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactBackend:
    backend = LocalArtifactBackend(tmp_path / "artifacts")
    records = [
        usage("sd15", "run-1", "denoise", images=0, steps=30, gpu=4.0, started=T0),
        usage("sd15", "run-1", "decode", images=1, steps=0, gpu=1.0, started=T0 + timedelta(seconds=10)),
        usage("sd15", "run-2", "decode", map_index=0, images=2, steps=20, gpu=3.0, started=T0 + timedelta(days=1)),
        usage("sd15", "run-2", "decode", map_index=1, images=2, steps=20, gpu=3.0, started=T0 + timedelta(days=1)),
        usage("sdxl", "run-3", "decode", images=1, steps=25, gpu=6.5, started=T0 + timedelta(days=2),
              models=("tiny-sdxl", "tiny-sdxl-vae")),
        usage("sdxl", "run-4", "decode", images=9, steps=9, gpu=9.0, tenant="other"),
    ]
    for record in records:
        write_usage(backend, record)
    return backend


def test_summing_several_objects(store: LocalArtifactBackend) -> None:
    records = read_usage(store, "acme")
    assert len(records) == 5  # the other tenant's object is not read
    summary = summarize(records, tenant="acme")
    totals = summary["totals"]
    assert (totals["runs"], totals["tasks"], totals["images"], totals["steps"]) == (3, 5, 6, 95)
    assert totals["gpu_seconds"] == pytest.approx(17.5) and totals["nodes"] == 15
    assert [(m["name"], m["tasks"]) for m in totals["models"]] == [("tiny-sd1", 4), ("tiny-sdxl", 1),
                                                                   ("tiny-sdxl-vae", 1)]
    runs = {r["run_id"]: r for r in summary["runs"]}
    assert [r["run_id"] for r in summary["runs"]] == ["run-1", "run-2", "run-3"]  # by start
    assert (runs["run-1"]["tasks"], runs["run-1"]["images"], runs["run-1"]["steps"]) == (2, 1, 30)
    assert runs["run-1"]["gpu_seconds"] == pytest.approx(5.0)
    assert runs["run-1"]["started"] == T0.isoformat()
    assert runs["run-1"]["ended"] == (T0 + timedelta(seconds=15)).isoformat()
    assert runs["run-3"]["models"] == ["tiny-sdxl", "tiny-sdxl-vae"]


def test_filters(store: LocalArtifactBackend) -> None:
    def totals(**filters: Any) -> tuple[int, int, int]:
        t = summarize(read_usage(store, "acme", **filters))["totals"]
        return t["runs"], t["tasks"], t["images"]

    assert totals(dag_id="sd15") == (2, 4, 5)
    assert totals(dag_id="sd15", run_id="run-2") == (1, 2, 4)
    assert totals(run_id="run-3") == (1, 1, 1)  # a run id alone filters the records themselves
    assert totals(since=T0 + timedelta(hours=1)) == (2, 3, 5)
    assert totals(dag_id="nothing") == (0, 0, 0)
    assert summarize(read_usage(store, "nobody"))["totals"]["runs"] == 0


def test_a_retried_task_overwrites_its_usage(tmp_path: Path) -> None:
    backend = LocalArtifactBackend(tmp_path)
    first = write_usage(backend, usage("sd15", "run-1", "decode", try_number=1, gpu=2.0, steps=10))
    again = write_usage(backend, usage("sd15", "run-1", "decode", try_number=2, gpu=2.0, steps=10))
    assert first == again
    records = read_usage(backend, "acme")
    assert len(records) == 1 and records[0]["try_number"] == 2
    totals = summarize(records)["totals"]
    assert (totals["tasks"], totals["steps"], totals["gpu_seconds"]) == (1, 10, 2.0)
    # a caller that concatenates lists still counts a task once
    assert summarize(records + records)["totals"] == totals


def test_a_foreign_object_under_usage_is_an_error(tmp_path: Path) -> None:
    from invokeai_provider.errors import InvokeAIProviderError

    backend = LocalArtifactBackend(tmp_path)
    backend.write_bytes("acme/usage/sd15/r/x.json", b"not json")
    with pytest.raises(InvokeAIProviderError, match="acme/usage/sd15/r/x.json is not JSON"):
        read_usage(backend, "acme")


def test_usage_cli(store: LocalArtifactBackend, capsys: pytest.CaptureFixture[str]) -> None:
    root = store.root.as_uri()
    assert cli_main(["usage", "--tenant", "acme", "--artifacts", root, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tenant"] == "acme" and summary["totals"]["runs"] == 3 and summary["totals"]["images"] == 6
    assert cli_main(["usage", "--tenant", "acme", "--artifacts", root, "--dag-id", "sd15",
                     "--since", "2025-06-02"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("tenant acme: 1 runs, 2 tasks, 4 images, 40 steps, 6.00 GPU seconds, models: tiny-sd1")
    assert "sd15 / run-2" in text and "run-1" not in text
    assert cli_main(["usage", "--tenant", "../evil", "--artifacts", root]) == 1
    assert "--tenant '../evil' contains '..'" in capsys.readouterr().err
    assert cli_main(["usage", "--tenant", "acme", "--artifacts", root, "--since", "yesterday"]) == 1
    assert "expected an ISO 8601" in capsys.readouterr().err


def test_usage_objects_on_an_s3_root(seaweed_s3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The same keys, overwrite and listing through the S3 backend (SeaweedFS on loopback)."""
    import uuid

    from invokeai_provider.storage.base import backend_for_uri
    from invokeai_provider.execution.usage import usage_report

    import os

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AIRFLOW_CONN_INVOKEAI_S3", json.dumps({
        "conn_type": "invokeai_s3", "login": seaweed_s3.access_key, "password": seaweed_s3.secret_key,
        "extra": {"endpoint_url": seaweed_s3.endpoint_url, "region_name": "us-east-1"}}))
    root = f"s3://invokeai-test/usage-{uuid.uuid4().hex[:8]}"
    backend = backend_for_uri(root)
    key = write_usage(backend, usage("sd15", "run-1", "decode", map_index=0, try_number=1, steps=7))
    assert key == "acme/usage/sd15/run-1/decode-0.json"
    write_usage(backend, usage("sd15", "run-1", "decode", map_index=0, try_number=2, steps=7))  # the retry
    write_usage(backend, usage("sd15", "run-2", "decode", steps=5, started=T0 + timedelta(days=1)))
    raw = seaweed_s3.client().get_object(Bucket="invokeai-test", Key=f"{root.split('/', 3)[3]}/{key}")
    assert json.loads(raw["Body"].read())["try_number"] == 2
    totals = usage_report(root, "acme")["totals"]
    assert (totals["runs"], totals["tasks"], totals["steps"]) == (2, 2, 12)
    assert usage_report(root, "acme", run_id="run-2")["totals"]["steps"] == 5
    assert cli_main(["usage", "--tenant", "acme", "--artifacts", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["tasks"] == 2
