"""What ``invokeai-airflow run`` prints: tasks in plan order with mapped instances by map index, and a refused
conf value as one line naming the Param, the value and what it takes, before Airflow is started."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from invokeai_provider.cli.conf_check import ParamValueError, check_conf, describe_schema
from invokeai_provider.cli.demo import demo_sets
from invokeai_provider.cli.run_output import ordered_tasks, print_run
from invokeai_provider.cluster.local_airflow import RunResult

SD15 = REPO_ROOT / "dags" / "workflows" / "sd15-text-to-image.json"
SIZE = {"type": "integer", "minimum": 64, "maximum": 2048, "multipleOf": 8, "title": "Noise: Width"}


def task(task_id: str, map_index: int = -1, label: str = "") -> dict:
    return {"task_id": task_id, "map_index": map_index, "state": "success", "queue": "default", "label": label}


def test_mapped_instances_follow_their_task_by_map_index() -> None:
    started = [task("sessions"), task("gen", 10), task("gen", 2), task("collect"), task("gen", 0), task("gen", 9),
               task("gen", 1)]
    assert [(t["task_id"], t["map_index"]) for t in ordered_tasks(started)] == [
        ("sessions", -1), ("gen", 0), ("gen", 1), ("gen", 2), ("gen", 9), ("gen", 10), ("collect", -1)]


def test_print_run_lists_the_ordered_tasks_and_records() -> None:
    result = RunResult("d", "r1", "success", tasks=[task("gen", 1, "b"), task("gen", 0, "a")],
                       images=[{"image_name": "x.png", "metadata": {"big": 1}}])
    out, err = io.StringIO(), io.StringIO()
    print_run(result, as_json=False, out=out, err=err)
    assert err.getvalue().splitlines() == ["task gen[0] [a]: success (queue default)",
                                           "task gen[1] [b]: success (queue default)", "DAG run r1: success, 1 images"]
    assert '"metadata"' not in out.getvalue() and "x.png" in out.getvalue()


@pytest.mark.parametrize("value, message", [
    (100, "Param size (Noise: Width): got 100: not a multiple of 8; expected an integer from 64 to 2048, a multiple "
          "of 8"),
    (4096, "got 4096: above the maximum 2048;"),
    ("wide", 'got "wide": not an integer;'),
])
def test_a_refused_value_is_one_line(value, message) -> None:
    with pytest.raises(ParamValueError) as refused:
        check_conf({"size": SIZE, "seed": {"type": "integer"}}, {"seed": 1, "size": value})
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_huge_value_is_not_repeated() -> None:
    with pytest.raises(ParamValueError) as refused:
        check_conf({"prompt": {"type": "string", "maxLength": 10}}, {"prompt": "x" * 100_000})
    text = str(refused.value)
    assert "100000 characters, more than 10" in text and len(text) < 300


def test_schemas_are_described_briefly() -> None:
    assert describe_schema({"enum": [f"s{i}" for i in range(20)]}) == \
        "one of: s0, s1, s2, s3, s4, s5, s6, s7, ... (20 choices)"
    assert describe_schema({"type": "array", "minItems": 1, "items": {"type": "integer", "multipleOf": 8}}) == \
        "a list of at least 1 items, each an integer, a multiple of 8"
    assert describe_schema({"type": ["string", "null"], "maxLength": 5}) == "a string of 0 to 5 characters, or null"


def test_run_refuses_a_bad_param_in_one_line_before_airflow_runs(tmp_path: Path) -> None:
    [width] = demo_sets(SD15, {"width": 100})  # whatever the workflow calls the Param feeding the noise width
    name = width.partition("=")[0]
    home = tmp_path / "home"
    exe = Path(sys.executable).with_name("invokeai-airflow")
    result = subprocess.run([str(exe), "run", str(SD15), "--set", width, "--home", str(home), "--model-root",
                             str(tmp_path / "models")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: DAG 'sd15-text-to-image': no run was started: {_named(name)}: got 100: not a multiple of 8; expected "
        "an integer from 64 to 2048, a multiple of 8"]
    assert not (home / "airflow.db").exists()  # refused before the database was even made


def _named(name: str) -> str:
    """``Param NAME (Title)``: the form's title, when the workflow gives the field one."""
    from invokeai_provider.compiler.params import param_specs
    from invokeai_provider.graph.workflow import load_document

    specs = param_specs(load_document(SD15.read_text()), model_names=lambda node_type, field: [])
    title = next(s.schema.get("title") for s in specs if s.name == name)
    return f"Param {name}" + (f" ({title})" if title and title != name else "")


def test_run_refuses_unknown_conf_keys_naming_the_closest_param(tmp_path: Path) -> None:
    home = tmp_path / "home"
    exe = Path(sys.executable).with_name("invokeai-airflow")
    result = subprocess.run([str(exe), "run", str(SD15), "--set", "frobnicate=1", "--set", "noise_widht=64", "--home",
                             str(home), "--model-root", str(tmp_path / "models")], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: run conf: unknown keys 'frobnicate', 'noise_widht' (did you mean 'noise_width'?); "
                           "this DAG's Params are: ")
    assert line.endswith("(--set NAME=VALUE sets a Param, NODE_ID.FIELD=VALUE a node's input)")
    assert not (home / "airflow.db").exists()
