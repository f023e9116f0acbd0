"""The DAG file ``compile`` writes reads like a hand-written one: the workflow as indented JSON, short lines, and
at node granularity each node operator called with the node's own inputs; it loads as the same DAG and refuses
to load once its calls no longer match the workflow."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO_ROOT, wf_edge, wf_node, workflow

from invokeai_provider.compiler.params import param_specs
from invokeai_provider.compiler.render import node_call_inputs, render_dag_file
from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.graph.workflow import load_document

SD15 = REPO_ROOT / "dags" / "workflows" / "sd15-text-to-image.json"
JSON_STRING_LINE = re.compile(r'^\s*("[^"]*": )?".*",?$')  # one JSON string (a prompt, a description)


def document_lines(text: str) -> tuple[list[str], list[str]]:
    """(the embedded workflow's lines, every other line) of a generated file."""
    start = text.index("DOCUMENT = json.loads(r'''\n") + len("DOCUMENT = json.loads(r'''\n")
    end = text.index("\n''')", start)
    return text[start:end].splitlines(), (text[:start] + text[end:]).splitlines()


def noise_workflow(**noise_inputs: Any) -> dict[str, Any]:
    """A seed primitive feeding a noise node whose width is exposed; height and use_cpu as given."""
    nodes = [wf_node("seed", "integer", label="Seed", value=5),
             wf_node("noise", "noise", label="Noise", seed=0, width=64, **noise_inputs)]
    return workflow(nodes, [wf_edge("seed", "value", "noise", "seed")],
                    exposed=[{"nodeId": "noise", "fieldName": "width"}])


def write(tmp_path: Path, doc: dict[str, Any], granularity: str = "node") -> tuple[Path, str]:
    source = tmp_path / "wf.json"
    source.write_text(json.dumps(doc))
    text = render_dag_file(source, dag_id="wf", granularity=granularity, source_name=source.name)
    out = tmp_path / "wf_dag.py"
    out.write_text(text)
    return out, text


@pytest.mark.parametrize("granularity", ["segment", "node"])
def test_the_example_workflow_is_embedded_as_indented_json(granularity: str) -> None:
    text = render_dag_file(SD15, dag_id="sd15", granularity=granularity, source_name=SD15.name)
    embedded, code = document_lines(text)
    assert json.loads("\n".join(embedded)) == json.loads(SD15.read_text())  # the same content
    assert len(embedded) > 100 and embedded[0] == "{" and embedded[-1] == "}"
    assert all(line.startswith("  ") for line in embedded[1:-1])  # indented, one item per line
    assert [line for line in code if len(line) > 120] == []
    assert all(JSON_STRING_LINE.match(line) for line in embedded if len(line) > 120)  # only long texts run long
    assert '\\"' not in "\n".join(code)  # no escaped JSON string anywhere
    compile(text, "sd15.py", "exec")


def test_node_calls_show_the_nodes_own_inputs(tmp_path: Path) -> None:
    doc = noise_workflow(height=96, use_cpu=True)  # use_cpu=True is the default: not shown
    [width] = param_specs(load_document(json.dumps(doc)), model_names=lambda node_type, field: [])
    _, text = write(tmp_path, doc)
    call = text[text.index("    noise = NoiseOperator("):].split("\n    [", 1)[0]
    assert f"width='{{{{ params.{width.name} }}}}'" in call and "height=96" in call
    assert "use_cpu" not in call and "seed=" not in call.split("#")[0]
    assert "# Noise (noise); from other tasks: seed <- seed.value" in text
    assert "seed = IntegerOperator(task_id='seed', value=5, plan_key=KEY, plan_task='seed'" in text
    assert "plan_key=KEY" in call  # still runs its planned node from the embedded workflow


def test_the_generated_file_loads_as_the_dag_and_refuses_edited_inputs(tmp_path: Path) -> None:
    out, text = write(tmp_path, noise_workflow(height=96))
    dag = runpy.run_path(str(out))["dag"]
    assert sorted(t.task_id for t in dag.tasks) == ["noise", "seed"]
    noise = dag.get_task("noise")
    assert noise.node_inputs()["height"] == 96 and noise.plan_task == "noise"
    assert noise.trigger_rule == "none_failed" and [u.task_id for u in noise.upstream_list] == ["seed"]

    out.write_text(text.replace("height=96", "height=104"))
    with pytest.raises(InvokeAIProviderError, match="task 'noise': its inputs height differ from the embedded"):
        runpy.run_path(str(out))


def test_template_like_text_and_quotes_survive_embedding(tmp_path: Path) -> None:
    tricky = "a '''quoted''' \\ {{ not a param }} \u00e9\u2028 line"
    doc = workflow([wf_node("text", "string", label="Text", value=tricky)], [])
    out, text = write(tmp_path, doc)
    namespace = runpy.run_path(str(out))
    assert namespace["DOCUMENT"] == json.loads(json.dumps(doc))
    assert "value=" not in text.split("    text = StringOperator(", 1)[1].split("\n")[0]  # not rendered by Jinja
    assert "value as in the workflow (its text looks like a Jinja template)" in text


def test_a_mapped_node_task_lists_its_inputs_in_its_comment(tmp_path: Path) -> None:
    nodes = [wf_node("range", "range", label="Range", start=0, stop=3, step=1), wf_node("each", "iterate"),
             wf_node("times", "mul", label="Times", b=7)]
    doc = workflow(nodes, [wf_edge("range", "collection", "each", "collection"), wf_edge("each", "item", "times", "a")])
    out, text = write(tmp_path, doc)
    assert "# Times (mul); from other tasks: a <- each.item; inputs: b=7" in text
    assert "times = MultiplyOperator.partial(task_id='times', plan_key=KEY" in text
    dag = runpy.run_path(str(out))["dag"]
    assert "times" in dag.task_ids
    assert "    range_task = RangeOperator(task_id='range', stop=3," in text  # not the builtin range


def test_node_call_inputs_come_from_the_compiled_workflow() -> None:
    from invokeai_provider.compiler.dags import load_compiled

    compiled = load_compiled(json.dumps(noise_workflow(height=96)), granularity="node")
    shown = node_call_inputs(compiled, "noise")
    assert shown.kwargs["height"] == 96 and shown.fed == ["seed <- seed.value"]
