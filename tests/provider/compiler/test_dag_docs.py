"""The DAG's documentation: the workflow's name, description and notes, and a table of its form inputs."""

from __future__ import annotations

from test_params import SD15_DAG_WORKFLOW, load, wf_node, workflow

from invokeai_provider.compiler.dag_docs import workflow_doc_md
from invokeai_provider.compiler.params import param_specs
from invokeai_provider.graph.workflow import load_document


def test_doc_md_names_the_workflow_and_lists_inputs():
    doc = load_document(SD15_DAG_WORKFLOW.read_text())
    specs = param_specs(doc)
    md = workflow_doc_md(doc, specs)
    assert md.startswith("# SD1.5 text to image\n")
    assert "Text to image with a Stable Diffusion 1.x model" in md
    assert "The image carries InvokeAI's metadata" in md
    assert "| Denoise: Steps | `denoise_steps` | Steps (`integer`) | `value` | `30` |" in md
    assert md.count("\n| ") == len(specs) + 2  # header and separator rows, then one row per input


def test_doc_md_escapes_pipes_and_marks_required_inputs():
    doc = load(workflow([wf_node("img", "image", label="Input | image", image=...)],
                        exposed=[{"nodeId": "img", "fieldName": "image"}]))
    md = workflow_doc_md(doc, param_specs(doc))
    assert "A test | workflow" in md  # the description is prose, not a table cell
    assert "| Input \\| image |" in md and "*(required)*" in md
