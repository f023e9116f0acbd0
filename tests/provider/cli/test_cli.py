"""The invokeai-airflow command: nodes --json, graph run, graph validate, and its error exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import edge, graph, node, wf_edge, wf_node, workflow

from invokeai_provider.cli.app import main


def write(tmp_path: Path, doc: dict, name: str = "g.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def iterate_graph() -> dict:
    return graph(node("r", "range", start=0, stop=3, step=1), node("it", "iterate"), node("m", "mul", b=10),
                 node("lone", "integer", value=7),
                 edges=[edge("r", "collection", "it", "collection"), edge("it", "item", "m", "a")])


def test_graph_run_prints_leaf_outputs_in_iteration_order(tmp_path, capsys):
    path = write(tmp_path, iterate_graph())
    assert main(["graph", "run", str(path), "--artifacts", (tmp_path / "a").as_uri()]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"m": [{"type": "integer_output", "value": v} for v in (0, 10, 20)],
                   "lone": [{"type": "integer_output", "value": 7}]}


def test_set_overrides_a_literal(tmp_path, capsys):
    path = write(tmp_path, iterate_graph())
    assert main(["graph", "run", str(path), "--artifacts", str(tmp_path / "a"), "--set", "m.b=2",
                 "--set", "lone.value=8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["value"] for o in out["m"]] == [0, 2, 4] and out["lone"][0]["value"] == 8


@pytest.mark.parametrize("args, message", [
    (["--set", "m.a=1"], "the field is fed by an edge from it.item"),
    (["--set", "ghost.a=1"], "no node 'ghost'"),
    (["--set", "m.zz=1"], "has no input 'zz'"),
    (["--set", "m.b=notanumber"], 'node m (mul): field "b"'),
    (["--set", "nodot"], "expected NODE_ID.FIELD=VALUE"),
])
def test_bad_overrides_exit_nonzero_with_a_clear_error(tmp_path, capsys, args, message):
    path = write(tmp_path, iterate_graph())
    assert main(["graph", "run", str(path), "--artifacts", str(tmp_path / "a"), *args]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_invalid_graph_exits_nonzero_and_runs_nothing(tmp_path, capsys):
    doc = graph(node("a", "integer"), node("b", "add"), edges=[edge("a", "value", "b", "a"), edge("a", "value", "b", "a")])
    path = write(tmp_path, doc)
    assert main(["graph", "run", str(path), "--artifacts", str(tmp_path / "a")]) == 1
    assert "already has an edge" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_failing_node_exits_nonzero_naming_it(tmp_path, capsys):
    path = write(tmp_path, graph(node("boom", "test_error")))
    assert main(["graph", "run", str(path), "--artifacts", str(tmp_path / "a")]) == 1
    assert "Node boom (test_error) failed" in capsys.readouterr().err


def test_missing_file_and_malformed_json(tmp_path, capsys):
    assert main(["graph", "run", str(tmp_path / "nope.json")]) == 1
    assert "No such file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    assert main(["graph", "validate", str(bad)]) == 1
    assert f"malformed JSON in {bad} at line 1" in capsys.readouterr().err
    for command in (["graph", "run", str(bad)], ["compile", str(bad), "--dag-id", "bad", "-o", str(tmp_path / "x.py")]):
        assert main(command) == 1
        assert f"malformed JSON in {bad} at line 1" in capsys.readouterr().err, command
    assert not (tmp_path / "x.py").exists()


def test_nodes_json_lists_every_type_with_schemas(capsys):
    assert main(["nodes", "--json"]) == 0
    described = {entry["type"]: entry for entry in json.loads(capsys.readouterr().out)}
    add = described["add"]
    assert add["output_type"] == "integer_output" and add["category"] == "math"
    assert set(add["inputs"]["properties"]) == {"a", "b"}
    assert add["outputs"]["properties"]["value"]["type"] == "integer"
    assert described["iterate"]["use_cache"] is False
    assert {"iterate", "collect", "if", "integer", "string_join", "dynamic_prompt", "core_metadata"} <= set(described)


def test_console_script_entry_point_runs(tmp_path):
    path = write(tmp_path, iterate_graph())
    exe = Path(sys.executable).with_name("invokeai-airflow")
    result = subprocess.run([str(exe), "graph", "validate", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "valid graph, 4 nodes, 2 edges" in result.stdout


def test_workflow_batch_nodes_run_one_session_each(tmp_path, capsys):
    doc = workflow([wf_node("prompts", "string_batch", strings=["cat", "dog"], batch_group_id="None"),
                    wf_node("seeds", "integer_batch", integers=[1, 2], batch_group_id="None"),
                    wf_node("p", "test_prompt", prompt=...), wf_node("seed", "integer")],
                   [wf_edge("prompts", "value", "p", "prompt"), wf_edge("seeds", "value", "seed", "value")])
    path = write(tmp_path, doc)
    assert main(["graph", "run", str(path), "--artifacts", str(tmp_path / "a")]) == 0
    sessions = json.loads(capsys.readouterr().out)
    assert [(s["p"][0]["prompt"], s["seed"][0]["value"]) for s in sessions] == [
        ("cat", 1), ("cat", 2), ("dog", 1), ("dog", 2)]
    assert main(["graph", "validate", str(path)]) == 0
    assert "a batch of 4 sessions" in capsys.readouterr().out
