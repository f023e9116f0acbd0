"""Prompt nodes: dynamic prompts, prompts from a file, style preset templates."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from helpers import only_output, run_nodes

from invokeai_provider.core.context import RunContext
from invokeai_provider.errors import MissingInputError, NodeExecutionError, NodeValidationError
from invokeai_provider.graph.graph import Graph
from invokeai_provider.core.registry import InvocationRegistry
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore


def single(run, **node):
    return only_output(run, node)


# --- declarations -----------------------------------------------------------------------------------

DECLARED = {
    "dynamic_prompt": ("DynamicPromptInvocation", "Dynamic Prompt", "1.0.1", "string_collection_output",
                       ["prompt", "max_prompts", "combinatorial"], False),
    "prompt_from_file": ("PromptsFromFileInvocation", "Prompts from File", "1.0.2", "string_collection_output",
                         ["file_path", "pre_prompt", "post_prompt", "start_line", "max_prompts"], True),
    "prompt_template": ("PromptTemplateInvocation", "Prompt Template", "1.0.0", "prompt_template_output",
                        ["style_preset", "positive_prompt", "negative_prompt"], True),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declarations_match_invokeai(node_type):
    cls = InvocationRegistry.get_invocation_class(node_type)
    class_name, title, version, output_type, fields, use_cache = DECLARED[node_type]
    assert cls.__name__ == class_name
    assert (cls.UIConfig.title, cls.UIConfig.version, cls.UIConfig.category) == (title, version, "prompt")
    assert cls.get_output_annotation().get_type() == output_type
    assert list(cls.input_fields()) == fields
    assert cls.model_fields["use_cache"].default is use_cache


def test_field_defaults_and_requirements():
    dyn = InvocationRegistry.get_invocation_class("dynamic_prompt").model_fields
    assert dyn["prompt"].json_schema_extra["orig_required"] is True
    assert (dyn["max_prompts"].default, dyn["combinatorial"].default) == (1, False)
    pff = InvocationRegistry.get_invocation_class("prompt_from_file").model_fields
    assert pff["file_path"].json_schema_extra["orig_required"] is True
    assert (pff["start_line"].default, pff["max_prompts"].default) == (1, 1)
    assert pff["pre_prompt"].default is None and pff["post_prompt"].default is None
    tmpl = InvocationRegistry.get_invocation_class("prompt_template").model_fields
    assert tmpl["style_preset"].json_schema_extra["orig_required"] is True
    out = InvocationRegistry.get_output_class("prompt_template_output")
    assert set(out.model_fields) == {"type", "positive_prompt", "negative_prompt"}


# --- dynamic_prompt ---------------------------------------------------------------------------------

COLORS = ["red", "green", "blue"]
ANIMALS = ["cat", "dog"]
TEMPLATE = "a {red|green|blue} {cat|dog}"
ALL = [f"a {c} {a}" for c, a in itertools.product(COLORS, ANIMALS)]


def test_combinatorial_yields_every_combination_in_order(run):
    out = single(run, type="dynamic_prompt", prompt=TEMPLATE, combinatorial=True, max_prompts=100)
    assert out.collection == ALL


def test_combinatorial_respects_max_prompts(run):
    out = single(run, type="dynamic_prompt", prompt=TEMPLATE, combinatorial=True, max_prompts=4)
    assert out.collection == ALL[:4]


def test_combinatorial_is_deterministic(run, tmp_path):
    first = single(run, type="dynamic_prompt", prompt=TEMPLATE, combinatorial=True, max_prompts=10).collection
    other = RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "other"), dag_id="p", run_id="r2"))
    again = single(other, type="dynamic_prompt", prompt=TEMPLATE, combinatorial=True, max_prompts=10).collection
    assert first == again == ALL


def test_random_draws_max_prompts_variants(run):
    out = single(run, type="dynamic_prompt", prompt=TEMPLATE, max_prompts=25)
    assert len(out.collection) == 25
    assert set(out.collection) <= set(ALL)


def test_random_default_is_one_prompt(run):
    out = single(run, type="dynamic_prompt", prompt="{solo}")
    assert out.collection == ["solo"]


def test_plain_prompt_passes_through(run):
    assert single(run, type="dynamic_prompt", prompt="just text", combinatorial=True,
                  max_prompts=3).collection == ["just text"]


def test_multi_select_syntax(run):
    out = single(run, type="dynamic_prompt", prompt="{2$$a|b|c}", combinatorial=True, max_prompts=10)
    assert sorted(out.collection) == sorted(["a,b", "a,c", "b,a", "b,c", "c,a", "c,b"])


def test_dynamic_prompt_has_no_seed_field_like_invokeai():
    # InvokeAI 6.x's dynamic_prompt has no seed: random output is not reproducible, and the node is uncached.
    with pytest.raises(NodeValidationError):
        Graph.from_dict({"nodes": {"n": {"id": "n", "type": "dynamic_prompt", "prompt": "x", "seed": 1}},
                         "edges": []})


def test_unknown_wildcard_in_variant_fails_fast_when_combinatorial(run):
    with pytest.raises(NodeExecutionError, match="No values found for wildcard"):
        single(run, type="dynamic_prompt", prompt="a {__nope__|b}", combinatorial=True, max_prompts=5)


def test_bare_unknown_wildcard_is_left_as_text(run):
    out = single(run, type="dynamic_prompt", prompt="a __nope__ b", max_prompts=2)
    assert out.collection == ["a __nope__ b", "a __nope__ b"]


def test_dynamic_prompt_requires_prompt(run):
    with pytest.raises(NodeExecutionError) as info:
        single(run, type="dynamic_prompt")
    assert isinstance(info.value.__cause__, MissingInputError)


def test_dynamic_prompt_feeds_an_iterate(run):
    state = run_nodes(run, {
        "dp": {"type": "dynamic_prompt", "prompt": "{x|y}", "combinatorial": True, "max_prompts": 10},
        "it": {"type": "iterate"},
        "join": {"type": "string_join", "string_right": "!"},
    }, [
        {"source": {"node_id": "dp", "field": "collection"}, "destination": {"node_id": "it", "field": "collection"}},
        {"source": {"node_id": "it", "field": "item"}, "destination": {"node_id": "join", "field": "string_left"}},
    ])
    assert sorted(o.value for o in state.outputs_of("join")) == ["x!", "y!"]


# --- prompt_from_file -------------------------------------------------------------------------------


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("  first prompt \nsecond\n\nfourth\nfifth\n", encoding="utf-8")
    return str(path)


def test_reads_first_line_by_default(run, prompt_file):
    assert single(run, type="prompt_from_file", file_path=prompt_file).collection == ["first prompt"]


def test_reads_all_lines_with_zero_and_keeps_blank_lines(run, prompt_file):
    out = single(run, type="prompt_from_file", file_path=prompt_file, max_prompts=0)
    assert out.collection == ["first prompt", "second", "", "fourth", "fifth"]


def test_start_line_and_max_prompts(run, prompt_file):
    out = single(run, type="prompt_from_file", file_path=prompt_file, start_line=2, max_prompts=3)
    assert out.collection == ["second", "", "fourth"]
    out = single(run, type="prompt_from_file", file_path=prompt_file, start_line=5, max_prompts=10)
    assert out.collection == ["fifth"]
    out = single(run, type="prompt_from_file", file_path=prompt_file, start_line=9, max_prompts=0)
    assert out.collection == []


def test_pre_and_post_prompt(run, prompt_file):
    out = single(run, type="prompt_from_file", file_path=prompt_file, max_prompts=2,
                 pre_prompt="photo of ", post_prompt=", 4k")
    assert out.collection == ["photo of first prompt, 4k", "photo of second, 4k"]


def test_utf8_file(run, tmp_path):
    path = tmp_path / "u.txt"
    path.write_text("café ☕\n", encoding="utf-8")
    assert single(run, type="prompt_from_file", file_path=str(path)).collection == ["café ☕"]


def test_missing_file_is_refused_naming_node_and_field(run, tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(NodeExecutionError) as info:
        single(run, type="prompt_from_file", file_path=missing)
    message = str(info.value)
    assert "prompt_from_file" in message and "file_path" in message and "nope.txt" in message
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_a_directory_is_refused(run, tmp_path):
    with pytest.raises(NodeExecutionError, match="file_path"):
        single(run, type="prompt_from_file", file_path=str(tmp_path))


@pytest.mark.parametrize("field, value", [("start_line", 0), ("max_prompts", -1)])
def test_constraints(field, value):
    with pytest.raises(NodeValidationError):
        Graph.from_dict({"nodes": {"n": {"id": "n", "type": "prompt_from_file", "file_path": "x", field: value}},
                         "edges": []})


# --- prompt_template --------------------------------------------------------------------------------

PRESETS = {
    "cinematic": {"preset_data": {"positive_prompt": "cinematic still of {prompt}, film grain",
                                  "negative_prompt": "{prompt}, cartoon, {prompt}"}},
    "flat": {"positive_prompt": "no placeholder", "negative_prompt": "{prompt}"},
}


def template_node(preset_id: str, **fields) -> dict:
    return {"type": "prompt_template", "style_preset": {"style_preset_id": preset_id}, **fields}


def test_template_fills_every_placeholder(run):
    run.services["style_preset_records"] = PRESETS
    out = single(run, **template_node("cinematic", positive_prompt="a fox", negative_prompt="blurry"))
    assert out.positive_prompt == "cinematic still of a fox, film grain"
    assert out.negative_prompt == "blurry, cartoon, blurry"


def test_template_without_placeholder_and_default_prompts(run):
    run.services["style_preset_records"] = PRESETS
    out = single(run, **template_node("flat"))
    assert (out.positive_prompt, out.negative_prompt) == ("no placeholder", "")


def test_template_reads_invokeai_shaped_records_from_a_store_object(run):
    class Store:
        def get(self, preset_id):
            data = SimpleNamespace(positive_prompt="{prompt} in watercolor", negative_prompt="photo")
            return SimpleNamespace(id=preset_id, name="Watercolor", preset_data=data)

    run.services["style_preset_records"] = Store()
    out = single(run, **template_node("w", positive_prompt="a boat", negative_prompt="ignored"))
    assert (out.positive_prompt, out.negative_prompt) == ("a boat in watercolor", "photo")


def test_template_without_store_or_unknown_preset_fails_clearly(run):
    with pytest.raises(NodeExecutionError, match="no style preset store"):
        single(run, **template_node("cinematic"))
    run.services["style_preset_records"] = PRESETS
    with pytest.raises(NodeExecutionError, match="'missing' not found"):
        single(run, **template_node("missing"))


def test_template_requires_style_preset(run):
    run.services["style_preset_records"] = PRESETS
    with pytest.raises(NodeExecutionError) as info:
        single(run, type="prompt_template", positive_prompt="x")
    assert isinstance(info.value.__cause__, MissingInputError)
