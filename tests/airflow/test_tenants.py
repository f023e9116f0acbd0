"""Tenants through Airflow: the ``tenant`` Param picks the storage prefix of a run's images, Asset events
and usage records; bad tenants are refused before a run exists (compiled DAGs) or before any work
(hand-written DAGs); ``invokeai-airflow usage`` sums a tenant's runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from helpers import REPO_ROOT, uri_path

SD15_WORKFLOW = REPO_ROOT / "dags" / "workflows" / "sd15-text-to-image.json"
SMALL = ("model=tiny-sd1", "noise_width=64", "noise_height=64", "denoise_steps=3")
STEPS = 3  # denoise_steps above; the workflow's scheduler (DPM++ 2M Karras) runs one UNet step per step
SEGMENT_TASK = "sd1_5_text_to_image"
ACME_DAGS = ("tenant_acme_a", "tenant_acme_b")
REFUSED = {"../evil": "tenant_evil_dots", "a/b": "tenant_evil_slash"}


def files_naming(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if text in str(p.relative_to(root))] if root.exists() else []


# --- the Param ------------------------------------------------------------------------------------


def test_compiled_dags_have_a_tenant_param_with_the_configured_default(monkeypatch) -> None:
    from airflow.sdk.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    from invokeai_provider.compiler.dags import compile_dag

    monkeypatch.setenv("AIRFLOW__INVOKEAI__DEFAULT_TENANT", "house")
    dag = compile_dag(SD15_WORKFLOW, dag_id="tenant_param_default")
    assert list(dag.params)[-1] == "tenant"
    param = dag.params.get_param("tenant")
    assert param.value == "house" and param.schema["section"] == "Run" and param.schema["title"] == "Tenant"
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag)).params.get_param("tenant")
    assert restored.value == "house" and restored.schema["pattern"] == param.schema["pattern"]
    for bad in ("../evil", "a/b", "/abs", "Acme", ""):
        with pytest.raises(ParamValidationError):
            param.resolve(bad)
    assert param.resolve("acme") == "acme"
    assert "`tenant` Param" in dag.doc_md

    monkeypatch.setenv("AIRFLOW__INVOKEAI__DEFAULT_TENANT", "Not/A tenant")
    with pytest.raises(Exception, match=r"\[invokeai\] default_tenant"):
        compile_dag(SD15_WORKFLOW, dag_id="tenant_param_bad_default")


def test_hand_written_operators_check_params_and_conf_tenant_before_any_work(tmp_path: Path, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from invokeai_provider.operators import AddOperator

    monkeypatch.setenv("AIRFLOW__INVOKEAI__ARTIFACT_ROOT", tmp_path.as_uri())
    op = AddOperator(task_id="add", a=1, b=2)
    ti = SimpleNamespace(dag_id="hand", run_id="r", map_index=-1)
    env = op._environment({"params": {"tenant": "acme"}, "ti": ti}, "add")
    assert env.tenant == "acme" and env.usage is not None
    env = op._environment({"params": {}, "ti": ti, "dag_run": SimpleNamespace(conf={"tenant": "team-2"})}, "add")
    assert env.tenant == "team-2"
    for context, message in (({"params": {"tenant": "../evil"}}, "params.tenant '../evil' contains '..'"),
                             ({"params": {}, "dag_run": SimpleNamespace(conf={"tenant": "a/b"})},
                              "conf tenant 'a/b' contains a path separator")):
        with pytest.raises(AirflowFailException, match=message.replace(".", r"\.")):
            op._environment({**context, "ti": ti}, "add")
    assert not any(tmp_path.iterdir())


# --- runs through Airflow ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acme_runs(airflow_run) -> list[dict[str, Any]]:
    """Two runs of the SD1.5 workflow DAG with conf tenant=acme (two DAG ids, so filters can tell them apart)."""
    return [airflow_run(SD15_WORKFLOW, *SMALL, f"seed={seed}", "tenant=acme", dag_id=dag_id)
            for seed, dag_id in zip((3, 4), ACME_DAGS)]


def usage_object(artifact_root: Path, run: dict[str, Any]) -> dict[str, Any]:
    path = artifact_root / "acme" / "usage" / run["dag_id"] / run["run_id"] / f"{SEGMENT_TASK}.json"
    assert path.is_file(), f"no usage object at {path}"
    return json.loads(path.read_text())


def test_a_tenant_run_writes_under_its_prefix(acme_runs, artifact_root: Path) -> None:
    for run in acme_runs:
        assert run["state"] == "success", run["tasks"]
        [image] = run["images"]
        assert image["tenant"] == "acme"
        path = uri_path(image["uri"])
        assert path.is_file()
        assert path.relative_to(artifact_root).parts[:3] == ("acme", "runs", run["dag_id"])
        [event] = run["asset_events"]
        assert event["asset"] == "invokeai://acme/boards/none"
        assert [i["image_name"] for i in event["extra"]["images"]] == [image["image_name"]]
        assert not (artifact_root / "default" / "runs" / run["dag_id"]).exists()
        assert not (artifact_root / "default" / "usage" / run["dag_id"]).exists()


def test_a_tenant_run_records_its_usage(acme_runs, artifact_root: Path) -> None:
    for run in acme_runs:
        usage = usage_object(artifact_root, run)
        assert (usage["tenant"], usage["dag_id"], usage["run_id"]) == ("acme", run["dag_id"], run["run_id"])
        assert usage["task_id"] == SEGMENT_TASK and usage["map_index"] is None and usage["try_number"] == 1
        assert usage["images"] == 1 and usage["steps"] == STEPS
        assert usage["gpu_seconds"] > 0 and usage["gpu_seconds"] <= usage["node_seconds"]
        assert usage["node_types"]["denoise_latents"] == 1 and usage["nodes"] >= 8
        [model] = usage["models"]
        assert model["name"] == "tiny-sd1" and model["key"] and "unet" in model["submodels"]
        assert usage["hostname"] and usage["started"] <= usage["ended"]


def test_usage_cli_sums_the_tenants_runs(acme_runs, artifact_root: Path, capsys) -> None:
    from invokeai_provider.cli.app import main

    assert main(["usage", "--tenant", "acme", "--artifacts", artifact_root.as_uri(), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    totals = summary["totals"]
    assert (totals["runs"], totals["tasks"], totals["images"], totals["steps"]) == (2, 2, 2, 2 * STEPS)
    assert totals["gpu_seconds"] > 0 and [m["name"] for m in totals["models"]] == ["tiny-sd1"]
    assert {(r["dag_id"], r["run_id"]) for r in summary["runs"]} == {(r["dag_id"], r["run_id"]) for r in acme_runs}
    assert main(["usage", "--tenant", "acme", "--artifacts", artifact_root.as_uri(), "--dag-id", ACME_DAGS[1]]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"tenant acme: 1 runs, 1 tasks, 1 images, {STEPS} steps")
    assert acme_runs[1]["run_id"] in text and acme_runs[0]["run_id"] not in text


@pytest.fixture(scope="module")
def refused(airflow_run) -> dict[str, dict[str, Any]]:
    return {tenant: airflow_run(SD15_WORKFLOW, *SMALL, f"tenant={tenant}", dag_id=dag_id, expect_failure=True)
            for tenant, dag_id in REFUSED.items()}


@pytest.mark.parametrize("tenant", sorted(REFUSED))
def test_bad_tenants_are_refused_before_a_run_exists(refused, tenant: str, artifact_root: Path) -> None:
    result = refused[tenant]
    assert result["returncode"] == 1
    assert "tenant" in result["stderr"] and "no run was started" in result["stderr"]
    assert not files_naming(artifact_root, REFUSED[tenant])
    assert not (artifact_root.parent / "evil").exists() and not (artifact_root / "a").exists()


XCOM_SCRIPT = """
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
acme, refused = json.loads(os.environ["ACME_DAGS"]), json.loads(os.environ["REFUSED_DAGS"])
with create_session() as session:
    usage = {x.dag_id: XComModel.deserialize_value(x) for x in session.query(XComModel).filter(
        XComModel.key == "invokeai_usage", XComModel.dag_id.in_(acme))}
    runs = {d: session.query(DagRun).filter(DagRun.dag_id == d).count() for d in refused}
print(json.dumps({"usage": usage, "runs": runs}))
"""


def test_usage_xcom_matches_the_stored_object_and_refused_runs_never_existed(acme_runs, refused, airflow_python,
                                                                             artifact_root: Path) -> None:
    found = airflow_python(XCOM_SCRIPT, extra_env={"ACME_DAGS": json.dumps(ACME_DAGS),
                                                   "REFUSED_DAGS": json.dumps(sorted(REFUSED.values()))})
    for run in acme_runs:
        assert found["usage"][run["dag_id"]] == usage_object(artifact_root, run)
    assert found["runs"] == {dag_id: 0 for dag_id in REFUSED.values()}


HANDWRITTEN_DAG = '''
from airflow.sdk import DAG
from invokeai_provider.operators import AddOperator, MultiplyOperator

with DAG(dag_id="tenant_handwritten", schedule=None):
    add = AddOperator(task_id="add", a=2, b=3)
    MultiplyOperator(task_id="times", a=add.output["value"], b=10)
'''

HANDWRITTEN_SCRIPT = """
dag_file = home / "dags" / "tenant_handwritten.py"
dag_file.write_text(os.environ["HANDWRITTEN_DAG"])
try:
    good = run_dag(home, "tenant_handwritten", {"tenant": "handmade"}).to_dict()
    bad = run_dag(home, "tenant_handwritten", {"tenant": "../evil"}).to_dict()
finally:
    dag_file.unlink()
print(json.dumps({"good": good, "bad": bad}, default=str))
"""


def test_hand_written_dag_runs_under_the_conf_tenant(airflow_python, artifact_root: Path) -> None:
    result = airflow_python(HANDWRITTEN_SCRIPT, extra_env={"HANDWRITTEN_DAG": HANDWRITTEN_DAG})
    good, bad = result["good"], result["bad"]
    assert good["state"] == "success"
    folder = artifact_root / "handmade" / "usage" / "tenant_handwritten" / good["run_id"]
    usage = {p.name: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert sorted(usage) == ["add.json", "times.json"]
    assert usage["add.json"]["node_types"] == {"add": 1} and usage["add.json"]["gpu_seconds"] == 0
    assert usage["times.json"]["tenant"] == "handmade" and usage["times.json"]["images"] == 0
    assert bad["state"] == "failed"
    assert {t["task_id"]: t["state"] for t in bad["tasks"]}["add"] == "failed"
    assert not files_naming(artifact_root, bad["run_id"].replace(":", "_"))
    assert not files_naming(artifact_root, bad["run_id"])
