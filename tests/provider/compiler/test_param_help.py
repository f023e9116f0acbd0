"""Trigger-form help texts come from the workflow, and an emptied text box (a negative prompt) is allowed."""

from __future__ import annotations

from typing import Any, Optional

import pytest
from helpers import REPO_ROOT
from test_params import SD15_DAG_WORKFLOW, by_name, form_of, load, wf_edge, wf_node, workflow

from invokeai_provider.compiler.params import airflow_params, param_specs
from invokeai_provider.graph.workflow import load_document

EXAMPLES = sorted((REPO_ROOT / "dags" / "workflows").glob("*.json"))
GENERIC = {"The string value", "The integer value", "The float value", "The boolean value", "The model to select"}

COMPEL_PROMPT = "Prompt to be parsed by Compel to create a conditioning tensor"
NOISE_WIDTH = "Width of output (px)"


def described(node: dict[str, Any], field: str, description: Optional[str] = None,
              notes: Optional[str] = None) -> dict[str, Any]:
    """The workflow node with a description on one input and notes on the node, as InvokeAI's editor saves them."""
    if description is not None:
        node["data"]["inputs"][field]["description"] = description
    if notes is not None:
        node["data"]["notes"] = notes
    return node


def prompt_workflow(prompt_node: dict[str, Any], show_description: bool = True) -> dict[str, Any]:
    """A string primitive feeding a compel prompt and the metadata, an integer feeding the metadata before the
    noise width; both primitives are exposed."""
    nodes = [prompt_node, wf_node("size", "integer", label="Size", value=64),
             wf_node("cond", "compel", prompt=...), wf_node("noise", "noise", width=..., height=64),
             wf_node("meta", "core_metadata", positive_prompt=..., width=...)]
    edges = [wf_edge("text", "value", "meta", "positive_prompt"), wf_edge("text", "value", "cond", "prompt"),
             wf_edge("size", "value", "meta", "width"), wf_edge("size", "value", "noise", "width")]
    form = form_of(("text", "value", None), ("size", "value", None))
    if not show_description:
        for element in form["elements"].values():
            if element["type"] == "node-field":
                element["data"]["showDescription"] = False
    return workflow(nodes, edges, form=form, version="4.0.0")


def help_texts(doc: dict[str, Any], model_names: Any = None) -> dict[str, Optional[str]]:
    return {s.name: s.schema.get("description") for s in param_specs(load(doc), model_names=model_names)}


# --- where the help text comes from ----------------------------------------------------------------


def test_a_primitive_is_described_by_the_field_it_feeds_not_by_the_metadata():
    texts = help_texts(prompt_workflow(wf_node("text", "string", label="Prompt", value="a cat")))
    # the metadata edges come first in the document: the generation's field is preferred all the same
    assert texts == {"prompt": COMPEL_PROMPT, "size": NOISE_WIDTH}


def test_the_workflows_description_then_the_nodes_notes_come_first():
    doc = prompt_workflow(described(wf_node("text", "string", label="Prompt", value="a cat"), "value",
                                    description="  What to draw  ", notes="Keep it short"))
    assert help_texts(doc)["prompt"] == "What to draw"
    doc = prompt_workflow(described(wf_node("text", "string", label="Prompt", value="a cat"), "value",
                                    description="", notes="Keep it short"))
    assert help_texts(doc)["prompt"] == "Keep it short"


def test_showdescription_false_shows_no_help_text():
    doc = prompt_workflow(described(wf_node("text", "string", label="Prompt", value="a cat"), "value",
                                    description="What to draw"), show_description=False)
    assert help_texts(doc) == {"prompt": None, "size": None}


def test_an_unconnected_primitive_keeps_its_own_description_as_the_last_resort():
    doc = workflow([wf_node("text", "string", label="Free text", value="x")], form=form_of(("text", "value", None)),
                   version="4.0.0")
    assert help_texts(doc) == {"free_text": "The string value"}


def test_a_node_with_several_inputs_describes_the_field_before_its_notes():
    den = described(wf_node("den", "denoise_latents", label="Denoise", steps=20, cfg_scale=7.5), "steps",
                    notes="Tuned for SD1.5")
    doc = workflow([den], form=form_of(("den", "steps", None)), version="4.0.0")
    assert help_texts(doc) == {"denoise_steps": "Number of steps to run"}
    den = described(wf_node("den", "denoise_latents", label="Denoise", steps=20), "steps", description="More is slower")
    doc = workflow([den], form=form_of(("den", "steps", None)), version="4.0.0")
    assert help_texts(doc) == {"denoise_steps": "More is slower"}


def test_a_loader_is_not_a_primitive():
    """A loader has one input too, but its outputs are other things: its own field description stays."""
    model = {"key": "k", "hash": "", "name": "tiny-sd15", "base": "sd-1", "type": "main"}
    nodes = [wf_node("loader", "main_model_loader", label="Model", model=model), wf_node("cond", "compel", prompt="x")]
    doc = workflow(nodes, [wf_edge("loader", "clip", "cond", "clip")], form=form_of(("loader", "model", None)),
                   version="4.0.0")
    assert help_texts(doc) == {"model": "Main model (UNet, VAE, CLIP) to load"}


def test_any_model_feeding_a_loader_takes_its_description_and_its_models():
    model = {"key": "k", "hash": "", "name": "tiny-sd15", "base": "sd-1", "type": "main"}
    nodes = [wf_node("pick", "model_identifier", label="Model", model=model), wf_node("loader", "main_model_loader"),
             wf_node("meta", "core_metadata")]
    edges = [wf_edge("pick", "model", "meta", "model"), wf_edge("pick", "model", "loader", "model")]
    calls = []

    def names(node_type: str, field: str) -> list[str]:
        calls.append((node_type, field))
        everything = ["a-vae", "a-lora", "sd1-a", "sd1-b", "sdxl-c"]
        return ["sd1-a", "sd1-b", "sd2-d"] if node_type == "main_model_loader" else everything

    specs = by_name(param_specs(load(workflow(nodes, edges, form=form_of(("pick", "model", None)), version="4.0.0")),
                                model_names=names))
    assert specs["model"].schema["description"] == "Main model (UNet, VAE, CLIP) to load"
    # what both take, then the workflow's own model (not installed here)
    assert specs["model"].schema["enum"] == ["sd1-a", "sd1-b", "tiny-sd15"]
    assert calls == [("model_identifier", "model"), ("main_model_loader", "model")]  # the metadata has no hints


# --- the example workflows ---------------------------------------------------------------------------


def test_sd15_example_help_texts():
    specs = param_specs(load_document(SD15_DAG_WORKFLOW.read_text()))
    assert {s.name: s.schema.get("description") for s in specs} == {
        "positive_prompt": "What the image should show.",
        "negative_prompt": "What the image should not show; may be left empty.",
        "model": "Main model (UNet, VAE, CLIP) to load",
        "seed": "Seed for random number generation",
        "denoise_steps": "Number of steps to run",
        "denoise_cfg_scale": "Classifier-Free Guidance scale",
        "denoise_scheduler": "Scheduler to use during inference",
        "noise_width": NOISE_WIDTH,
        "noise_height": "Height of output (px)",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_no_example_param_has_a_generic_help_text(path):
    texts = {s.name: s.schema.get("description") for s in param_specs(load_document(path.read_text()))}
    assert texts and not {name: text for name, text in texts.items() if text in GENERIC}


# --- empty text ----------------------------------------------------------------------------------------


def ui_required(schema: dict[str, Any]) -> bool:
    """Airflow 3's trigger form marks a field required (and refuses an empty box) when its type has no "null"."""
    kinds = schema.get("type")
    return bool(kinds) and (not isinstance(kinds, list) or "null" not in kinds)


def test_an_empty_negative_prompt_is_accepted_and_not_required():
    from airflow.sdk.definitions.param import ParamsDict

    specs = param_specs(load_document(SD15_DAG_WORKFLOW.read_text()))
    params = airflow_params(specs)
    negative = params["negative_prompt"]
    assert negative.schema["type"] == ["string", "null"] and not ui_required(negative.schema)
    assert negative.value == "blurry, low quality" and negative.schema["format"] == "multiline"
    assert ParamsDict(airflow_params(specs)).validate()["negative_prompt"] == "blurry, low quality"
    assert negative.resolve("") == ""  # the REST API's empty string
    assert airflow_params(specs)["negative_prompt"].resolve(None) is None  # the form's emptied box
    # numbers and the scheduler dropdown stay required
    for name in ("seed", "denoise_steps", "denoise_cfg_scale", "denoise_scheduler", "noise_width"):
        assert ui_required(params[name].schema), name


def test_an_emptied_negative_prompt_runs_with_an_empty_string():
    """The form's null leaves the string primitive unset: its default, "", is what the prompt gets."""
    from invokeai_provider.compiler.dags import load_compiled
    from invokeai_provider.execution.task_runtime import graph_with_params
    from invokeai_provider.graph.graph import Graph

    compiled = load_compiled(SD15_DAG_WORKFLOW, model_names=lambda node_type, field: [])
    for value in (None, ""):
        graph = Graph.from_dict(graph_with_params(compiled, {"negative_prompt": value, "positive_prompt": "a cat"}))
        assert graph.nodes["negative"].value == "" and graph.nodes["positive"].value == "a cat"


def test_only_text_fields_that_default_to_empty_take_null():
    nodes = [wf_node("dyn", "dynamic_prompt", label="Variations", prompt="a {red|blue} car"),
             wf_node("mark", "img_watermark", label="Watermark", text="mine"),
             wf_node("text", "string", label="Note", value="")]
    doc = workflow(nodes, form=form_of(("dyn", "prompt", None), ("mark", "text", None), ("text", "value", None)),
                   version="4.0.0")
    schemas = {s.name: s.schema for s in param_specs(load(doc))}
    assert schemas["variations_prompt"]["type"] == "string"  # required by the node: empty is an error there
    assert schemas["watermark_text"]["type"] == "string"  # unset would mean "InvokeAI", not ""
    assert schemas["note"]["type"] == ["string", "null"] and schemas["note"]["default"] == ""
