"""Workflow exposed fields and batch data → Airflow DAG Params (the trigger form, reference §1.6)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Optional

import pytest
from helpers import REPO_ROOT, SHARED_WORKFLOWS

from invokeai_provider.errors import BatchItemsTypeError, NodeNotFoundError, WorkflowError
from invokeai_provider.compiler.dag_docs import workflow_doc_md
from invokeai_provider.compiler.param_values import to_node_value
from invokeai_provider.compiler.params import ParamSpec, airflow_params, param_specs
from invokeai_provider.execution.tenants import ARTIFACT_NAME_PATTERN
from invokeai_provider.graph.workflow import Document, load_document

SD15_DAG_WORKFLOW = REPO_ROOT / "dags" / "workflows" / "sd15-text-to-image.json"


# --- builders ---------------------------------------------------------------------------------------


def wf_node(node_id: str, node_type: str, label: str = "", labels: Optional[dict[str, str]] = None,
            **inputs: Any) -> dict[str, Any]:
    """A workflow invocation node; an input given as ``...`` has no value."""
    labels = labels or {}
    return {
        "id": node_id, "type": "invocation", "position": {"x": 0, "y": 0},
        "data": {"id": node_id, "type": node_type, "version": "1.0.0", "nodePack": "invokeai", "label": label,
                 "notes": "", "isOpen": True, "isIntermediate": False, "useCache": True,
                 "inputs": {name: ({"name": name, "label": labels.get(name, "")} if value is ... else
                                   {"name": name, "label": labels.get(name, ""), "value": value})
                            for name, value in inputs.items()}},
    }


def wf_edge(source: str, handle: str, target: str, target_handle: str) -> dict[str, Any]:
    return {"id": f"{source}-{target}-{target_handle}", "type": "default", "source": source, "sourceHandle": handle,
            "target": target, "targetHandle": target_handle}


def workflow(nodes: list, edges: Optional[list] = None, *, exposed: Optional[list] = None,
             form: Optional[dict] = None, version: str = "3.0.0") -> dict[str, Any]:
    doc = {"id": "wf-params", "name": "Params test", "author": "tests", "description": "A test | workflow",
           "version": "1", "contact": "", "tags": "", "notes": "Some notes", "meta": {"version": version},
           "exposedFields": exposed or [], "nodes": nodes, "edges": edges or []}
    if form is not None:
        doc["form"] = form
    return doc


def form_of(*items: Any) -> dict[str, Any]:
    """A 4.0 form: strings are headings, (node, field, settings) tuples are node fields, in order."""
    elements: dict[str, Any] = {}
    children = []
    for index, item in enumerate(items):
        element_id = f"e{index}"
        children.append(element_id)
        if isinstance(item, str):
            elements[element_id] = {"id": element_id, "type": "heading", "parentId": "root", "data": {"content": item}}
        else:
            node_id, field_name, settings = item
            data: dict[str, Any] = {"fieldIdentifier": {"nodeId": node_id, "fieldName": field_name},
                                    "showDescription": True}
            if settings is not None:
                data["settings"] = settings
            elements[element_id] = {"id": element_id, "type": "node-field", "parentId": "root", "data": data}
    elements["root"] = {"id": "root", "type": "container", "data": {"layout": "column", "children": children}}
    return {"rootElementId": "root", "elements": elements}


def load(doc: dict[str, Any]) -> Document:
    return load_document(json.dumps(doc))


def by_name(specs: list[ParamSpec]) -> dict[str, ParamSpec]:
    return {s.name: s for s in specs}


def shared(name: str) -> Document:
    path = SHARED_WORKFLOWS / name
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return load_document(path.read_text())


def denoise_workflow(form: Optional[dict] = None, exposed: Optional[list] = None) -> dict[str, Any]:
    nodes = [wf_node("den", "denoise_latents", label="Denoise", steps=25, scheduler="dpmpp_2m_sde_k", cfg_scale=6,
                     denoising_start=0, denoising_end=1),
             wf_node("noise", "noise", seed=7, width=512, height=512)]
    return workflow(nodes, exposed=exposed, form=form, version="4.0.0" if form else "3.0.0")


# --- the shared InvokeAI workflows (meta 3.0.0, exposedFields) ----------------------------------------


def test_shared_sd15_workflow_params():
    specs = param_specs(shared("text-to-image-sd15.json"))
    assert [s.name for s in specs] == ["main_model_loader_model", "positive_prompt", "negative_prompt",
                                       "noise_width", "noise_height", "l2i_board"]
    named = by_name(specs)
    positive = named["positive_prompt"].schema
    assert positive["type"] == ["string", "null"] and positive["format"] == "multiline"  # compel's default is ""
    assert positive["default"] == "Super cute tiger cub, national geographic award-winning photograph"
    assert positive["title"] == "Positive Prompt" and positive["section"] == "Positive Compel Prompt"
    assert named["negative_prompt"].schema["default"] == ""
    model = named["main_model_loader_model"]
    assert model.kind == "model" and model.field_name == "model"
    # no model in the workflow and the input is required: no default and no null, so Airflow requires it
    assert model.schema["type"] == "string" and "default" not in model.schema and "enum" not in model.schema
    assert model.schema["section"] == "Main Model - SD1.5, SD2"  # unlabeled node: the node type's title
    height = named["noise_height"].schema
    assert height["type"] == "integer" and height["default"] == 768
    assert height["exclusiveMinimum"] == 0 and height["multipleOf"] == 8 and "minimum" not in height
    board = named["l2i_board"]
    assert board.kind == "board" and board.schema["type"] == ["string", "null"] and board.schema["default"] is None


def test_shared_sdxl_workflow_params_with_model_enum():
    calls = []

    def names(node_type: str, field_name: str) -> list[str]:
        calls.append((node_type, field_name))
        return ["sdxl-base", "sdxl-turbo"] if node_type == "sdxl_model_loader" else []

    specs = param_specs(shared("text-to-image-sdxl.json"), model_names=names)
    named = by_name(specs)
    assert list(named) == ["positive_prompt", "negative_prompt", "sdxl_model_loader_model", "vae_use_the_fp16_model",
                           "l2i_board"]
    assert named["positive_prompt"].schema["default"] == "Super cute tiger cub, fierce, traditional chinese watercolor"
    assert named["negative_prompt"].schema["default"] == "photograph"
    assert named["positive_prompt"].schema["format"] == "multiline"
    assert named["sdxl_model_loader_model"].schema["enum"] == ["sdxl-base", "sdxl-turbo"]
    assert "enum" not in named["vae_use_the_fp16_model"].schema  # the callback had no VAE to offer
    assert ("sdxl_model_loader", "model") in calls and ("vae_loader", "vae_model") in calls


# --- the repository's 4.0 workflow with a form tree ---------------------------------------------------


def test_dag_workflow_form_order_sections_and_settings():
    doc = load_document(SD15_DAG_WORKFLOW.read_text())
    specs = param_specs(doc, model_names=lambda node_type, field: ["other-sd15"])
    assert [s.name for s in specs] == ["positive_prompt", "negative_prompt", "model", "seed", "denoise_steps",
                                       "denoise_cfg_scale", "denoise_scheduler", "noise_width", "noise_height"]
    assert [s.schema.get("section") for s in specs] == ["Prompt"] * 2 + ["Settings"] * 7
    named = by_name(specs)
    assert named["positive_prompt"].schema["title"] == "Positive prompt"
    assert named["positive_prompt"].schema["format"] == "multiline"
    assert named["seed"].schema == {**named["seed"].schema, "type": "integer", "default": 42, "minimum": 0,
                                    "maximum": 4294967295}
    steps = named["denoise_steps"].schema
    # the form's min 1 is tighter than the field's gt=0, so it replaces the exclusive bound
    assert (steps["minimum"], steps["maximum"], steps["default"]) == (1, 100, 30) and "exclusiveMinimum" not in steps
    assert steps["title"] == "Denoise: Steps"
    cfg = named["denoise_cfg_scale"].schema
    assert cfg["type"] == "number" and (cfg["minimum"], cfg["maximum"], cfg["default"]) == (1, 20, 7.5)
    scheduler = named["denoise_scheduler"].schema
    assert scheduler["default"] == "dpmpp_2m_k" and "euler_a" in scheduler["enum"] and len(scheduler["enum"]) == 31
    assert scheduler["values_display"]["dpmpp_2m_k"] == "DPM++ 2M Karras"
    width = named["noise_width"].schema
    assert (width["minimum"], width["maximum"], width["multipleOf"]) == (64, 2048, 8)
    model = named["model"].schema
    assert model["default"] == "tiny-sd15" and model["enum"] == ["other-sd15", "tiny-sd15"]
    assert named["model"].node_id == "model" and named["model"].kind == "model"


# --- type mapping, defaults, names ----------------------------------------------------------------------


def test_scheduler_and_steps_with_form_bounds():
    form = form_of("Sampling", ("den", "scheduler", None),
                   ("den", "steps", {"type": "integer-field-config", "component": "slider", "min": 5, "max": 50}),
                   ("noise", "seed", {"type": "integer-field-config", "component": "number-input", "min": -10,
                                      "max": 10 ** 12}))
    specs = param_specs(load(denoise_workflow(form=form)))
    named = by_name(specs)
    scheduler = named["denoise_scheduler"]
    assert scheduler.schema["type"] == "string" and scheduler.schema["default"] == "dpmpp_2m_sde_k"
    from invokeai_provider.models.stable_diffusion.schedulers import SCHEDULER_NAMES

    assert scheduler.schema["enum"] == list(SCHEDULER_NAMES)
    assert scheduler.schema["values_display"]["euler_a"] == "Euler Ancestral"
    steps = named["denoise_steps"].schema
    assert (steps["minimum"], steps["maximum"], steps["default"]) == (5, 50, 25)
    seed = named["noise_seed"].schema
    # the field's own ge=0 / le=2**32-1 are tighter than the form's -10 / 10**12
    assert (seed["minimum"], seed["maximum"]) == (0, 4294967295)
    assert [s.schema["section"] for s in specs] == ["Sampling"] * 3


def test_fields_before_any_heading_have_no_section():
    specs = param_specs(load(denoise_workflow(form=form_of(("den", "steps", None), "Later", ("den", "cfg_scale", None)))))
    assert "section" not in specs[0].schema and specs[1].schema["section"] == "Later"


def test_labels_names_and_deduplication():
    nodes = [wf_node("a", "integer", label="Count", value=1), wf_node("b", "integer", label="Count", value=2),
             wf_node("c", "string", labels={"value": "My Text!"}, value="x"),
             wf_node("d", "float", value=0.5)]
    exposed = [{"nodeId": n, "fieldName": "value"} for n in "abcd"]
    specs = param_specs(load(workflow(nodes, exposed=exposed)))
    assert [s.name for s in specs] == ["count", "count_2", "my_text", "float_value"]
    assert [s.schema["title"] for s in specs] == ["Count", "Count", "My Text!", "Value"]
    assert specs[3].schema["type"] == "number" and specs[3].schema["section"] == "Float Primitive"
    assert specs[2].schema["format"] == "multiline"  # string primitives are textareas in InvokeAI
    assert "format" not in specs[0].schema


def test_boolean_list_image_and_object_fields():
    nodes = [wf_node("flag", "boolean", value=True), wf_node("words", "string_collection", collection=["a", "b"]),
             wf_node("img", "image", image=...), wf_node("imgs", "image_collection", collection=...),
             wf_node("col", "color", color={"r": 1, "g": 2, "b": 3, "a": 255})]
    exposed = [{"nodeId": "flag", "fieldName": "value"}, {"nodeId": "words", "fieldName": "collection"},
               {"nodeId": "img", "fieldName": "image"}, {"nodeId": "imgs", "fieldName": "collection"},
               {"nodeId": "col", "fieldName": "color"}]
    flag, words, img, imgs, col = param_specs(load(workflow(nodes, exposed=exposed)))
    assert flag.schema["type"] == "boolean" and flag.schema["default"] is True
    assert words.schema["type"] == "array" and words.schema["items"] == {"type": "string"}
    assert words.schema["default"] == ["a", "b"]
    assert img.kind == "image" and img.schema["type"] == "string" and "default" not in img.schema
    assert imgs.kind == "image" and imgs.schema["type"] == ["array", "null"] and imgs.schema["default"] is None
    assert imgs.schema["items"] == {"type": "string", "pattern": ARTIFACT_NAME_PATTERN}  # a name in the run's store
    assert col.kind == "value" and col.schema["type"] == "object"
    assert col.schema["default"] == {"r": 1, "g": 2, "b": 3, "a": 255}
    assert col.schema["properties"]["r"]["maximum"] == 255


def test_unmappable_connection_field_falls_back_to_object():
    doc = load(denoise_workflow(exposed=[{"nodeId": "den", "fieldName": "positive_conditioning"}]))
    [spec] = param_specs(doc)
    assert spec.schema["type"] == "object" and "default" not in spec.schema


def test_optional_field_without_value_allows_null():
    doc = load(workflow([wf_node("m", "core_metadata", seed=...)], exposed=[{"nodeId": "m", "fieldName": "seed"}]))
    [spec] = param_specs(doc)
    assert spec.schema["type"] == ["integer", "null"] and spec.schema["default"] is None


def test_dropdown_and_input_components_from_form_settings():
    nodes = [wf_node("style", "string", label="Style prompt", value="ink"),
             wf_node("neg", "string", label="Negative prompt", value="blur")]
    dropdown = {"type": "string-field-config", "component": "dropdown",
                "options": [{"label": "Oil paint", "value": "oil"}, {"label": "Watercolor", "value": "water"}]}
    form = form_of(("style", "value", dropdown),
                   ("neg", "value", {"type": "string-field-config", "component": "input"}))
    style, neg = param_specs(load(workflow(nodes, form=form, version="4.0.0")))
    # the workflow's value stays selectable, so the default validates
    assert style.schema["enum"] == ["oil", "water", "ink"] and style.schema["default"] == "ink"
    assert style.schema["values_display"]["oil"] == "Oil paint" and "format" not in style.schema
    assert "format" not in neg.schema  # the form asked for a one-line input


def test_connected_and_repeated_fields_are_left_out():
    nodes = [wf_node("a", "integer", label="A", value=1), wf_node("add", "add", a=..., b=2)]
    exposed = [{"nodeId": "add", "fieldName": "a"}, {"nodeId": "add", "fieldName": "b"},
               {"nodeId": "add", "fieldName": "b"}]
    specs = param_specs(load(workflow(nodes, [wf_edge("a", "value", "add", "a")], exposed=exposed)))
    assert [(s.node_id, s.field_name) for s in specs] == [("add", "b")]


def test_graph_only_and_unexposed_documents_have_no_value_params():
    graph = {"id": "g", "nodes": {"p": {"id": "p", "type": "test_prompt", "prompt": "hi"}}, "edges": []}
    assert param_specs(load_document(json.dumps(graph))) == []
    assert param_specs(load(workflow([wf_node("a", "integer", value=1)]))) == []


def test_params_are_deterministic():
    text = SD15_DAG_WORKFLOW.read_text()
    first = param_specs(load_document(text), model_names=lambda t, f: ["b", "a"])
    second = param_specs(load_document(text), model_names=lambda t, f: ["b", "a"])
    assert first == second and [s.name for s in first] == [s.name for s in second]
    assert json.dumps([s.schema for s in first]) == json.dumps([s.schema for s in second])
    assert workflow_doc_md(load_document(text), first) == workflow_doc_md(load_document(text), second)


# --- batches -------------------------------------------------------------------------------------------


def test_batch_nodes_become_batch_params_after_value_params():
    nodes = [wf_node("seeds", "integer_batch", integers=[1, 2, 3]),
             wf_node("prompts", "string_batch", strings=["cat", "dog"], batch_group_id="G"),
             wf_node("styles", "string_batch", strings=["oil", "ink"], batch_group_id="G"),
             wf_node("noise", "noise", label="Noise", seed=..., width=512, height=512),
             wf_node("p", "string", label="Prompt", value=""), wf_node("s", "string", value="")]
    edges = [wf_edge("seeds", "integers", "noise", "seed"), wf_edge("prompts", "strings", "p", "value"),
             wf_edge("styles", "strings", "s", "value")]
    doc = load(workflow(nodes, edges, exposed=[{"nodeId": "noise", "fieldName": "width"}]))
    specs = param_specs(doc)
    assert [s.kind for s in specs] == ["value", "batch", "batch", "batch"]
    named = by_name(specs)
    assert list(named) == ["noise_width", "prompt_value_batch", "string_value_batch", "noise_seed_batch"]
    seeds = named["noise_seed_batch"]
    assert seeds.node_id is None and seeds.batch_index == (1, 0)
    datum = doc.batch.data[seeds.batch_index[0]][seeds.batch_index[1]]
    assert (datum.node_path, datum.field_name) == ("noise", "seed")
    assert seeds.schema["type"] == "array" and seeds.schema["default"] == [1, 2, 3]
    assert seeds.schema["items"] == {"type": "integer", "minimum": 0, "maximum": 4294967295}
    assert seeds.schema["title"] == "Noise.seed (batch)" and seeds.schema["section"] == "Batch"
    prompts = named["prompt_value_batch"]
    assert prompts.batch_index == (0, 0) and "Zipped with s.value" in prompts.schema["description"]
    assert to_node_value(seeds, [4, 5]) == [4, 5]


def test_batch_of_images_from_an_invokeai_batch_body():
    body = {"batch": {"graph": {"id": "g", "nodes": {"img": {"id": "img", "type": "image"}}, "edges": []},
                      "data": [[{"node_path": "img", "field_name": "image",
                                 "items": [{"image_name": "a.png"}, {"image_name": "b.png"}]}]], "runs": 1}}
    doc = load_document(json.dumps(body))
    [spec] = param_specs(doc)
    assert spec.kind == "batch" and spec.item_kind == "image" and spec.name == "image_image_batch"
    assert spec.schema["items"] == {"type": "string", "pattern": ARTIFACT_NAME_PATTERN}
    assert spec.schema["default"] == ["a.png", "b.png"]
    assert spec.schema["title"] == "img.image (batch)"
    assert to_node_value(spec, ["c.png"]) == [{"image_name": "c.png"}]


def test_batch_items_that_do_not_fit_the_field_are_refused():
    body = {"graph": {"nodes": {"n": {"id": "n", "type": "integer"}}, "edges": []},
            "data": [[{"node_path": "n", "field_name": "value", "items": ["one", "two"]}]]}
    with pytest.raises(BatchItemsTypeError, match=r"n\.value"):
        param_specs(load_document(json.dumps(body)))


def test_batch_naming_a_missing_node_is_refused():
    body = {"graph": {"nodes": {"n": {"id": "n", "type": "integer"}}, "edges": []},
            "data": [[{"node_path": "gone", "field_name": "value", "items": [1]}]]}
    with pytest.raises(NodeNotFoundError, match="gone") as info:
        param_specs(load_document(json.dumps(body)))
    assert info.value.node_id == "gone" and info.value.field == "value"


# --- bad form settings -----------------------------------------------------------------------------------


def test_form_bounds_that_exclude_every_value_are_refused():
    form = form_of(("den", "steps", {"type": "integer-field-config", "component": "slider", "min": 60, "max": 50}))
    with pytest.raises(WorkflowError, match=r"den\.steps") as info:
        param_specs(load(denoise_workflow(form=form)))
    assert info.value.node_id == "den" and info.value.field == "steps"


def test_non_numeric_form_bound_is_refused():
    form = form_of(("den", "steps", {"type": "integer-field-config", "min": "one"}))
    with pytest.raises(WorkflowError, match=r"den\.steps.*min"):
        param_specs(load(denoise_workflow(form=form)))


def test_malformed_dropdown_options_are_refused():
    form = form_of(("s", "value", {"type": "string-field-config", "component": "dropdown", "options": ["x"]}))
    with pytest.raises(WorkflowError, match=r"s\.value"):
        param_specs(load(workflow([wf_node("s", "string", value="x")], form=form, version="4.0.0")))


# --- Airflow Params --------------------------------------------------------------------------------------


def test_airflow_params_validate_with_airflows_own_rules():
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    specs = param_specs(load_document(SD15_DAG_WORKFLOW.read_text()))
    params = airflow_params(specs)
    assert list(params) == [s.name for s in specs] and all(isinstance(p, Param) for p in params.values())
    assert params["denoise_steps"].description == "Number of steps to run"
    assert params["denoise_steps"].schema["section"] == "Settings" and "default" not in params["denoise_steps"].schema
    resolved = ParamsDict(params).validate()
    assert resolved["seed"] == 42 and resolved["denoise_scheduler"] == "dpmpp_2m_k"

    for name, bad in [("seed", "forty-two"), ("denoise_steps", 0), ("denoise_steps", 101), ("noise_width", 100),
                      ("denoise_scheduler", "not-a-scheduler"), ("positive_prompt", 5)]:
        with pytest.raises(ParamValidationError):
            params[name].resolve(bad)
    assert params["noise_width"].resolve(1024) == 1024
    assert params["denoise_cfg_scale"].resolve(8) == 8  # an integer is a valid number

    bad = ParamsDict(airflow_params(specs))
    with pytest.raises(ParamValidationError, match="seed"):
        bad["seed"] = -1


def test_required_params_have_no_default_in_airflow():
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = airflow_params(param_specs(shared("text-to-image-sd15.json")))
    with pytest.raises(ParamValidationError, match="main_model_loader_model"):
        ParamsDict(params).validate()
    with pytest.raises(ParamValidationError):
        params["main_model_loader_model"].resolve(None)  # the type does not allow null
    assert params["main_model_loader_model"].resolve("my-model") == "my-model"
    assert params["l2i_board"].resolve(None) is None


def test_object_param_is_validated_by_its_properties():
    from airflow.sdk.exceptions import ParamValidationError

    doc = load(workflow([wf_node("col", "color", color={"r": 1, "g": 2, "b": 3, "a": 255})],
                        exposed=[{"nodeId": "col", "fieldName": "color"}]))
    params = airflow_params(param_specs(doc))
    with pytest.raises(ParamValidationError):
        params["color_color"].resolve({"r": 300, "g": 0, "b": 0, "a": 0})
    assert params["color_color"].resolve({"r": 3, "g": 0, "b": 0, "a": 0})["r"] == 3


# --- import weight, serialization ------------------------------------------------------------------------


def test_module_imports_nothing_heavy():
    modules = ", ".join(f"invokeai_provider.compiler.{m}" for m in (
        "params", "param_schema", "param_values", "model_choices", "tenant_param", "dag_docs"))
    code = (f"import sys, {modules}; "
            "print(sorted(m for m in ('airflow', 'torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]"


def test_params_survive_dag_serialization():
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    specs = param_specs(load_document(SD15_DAG_WORKFLOW.read_text()))
    dag = DAG("params_roundtrip", params=airflow_params(specs), schedule=None)
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    scheduler = restored.params.get_param("denoise_scheduler")
    assert scheduler.schema["values_display"]["euler_a"] == "Euler Ancestral"
    assert scheduler.schema["section"] == "Settings" and scheduler.value == "dpmpp_2m_k"
    assert list(restored.params) == [s.name for s in specs]
