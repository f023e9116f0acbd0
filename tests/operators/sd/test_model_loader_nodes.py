"""Model identifier and loader nodes: declarations, submodel splitting, LoRA chains, settings and checks."""

from __future__ import annotations

import pytest

import invokeai_provider.operators.sd.model_loaders as loader_nodes  # importing registers the nodes
import invokeai_provider.operators.core.models as model_checks
from helpers import edge, only_output, run_nodes

from invokeai_provider.errors import NodeExecutionError, NodeValidationError, RequiredConnectionError
from invokeai_provider.graph.graph import Graph
from invokeai_provider.core.registry import InvocationRegistry


def ident(key: str, base: str = "sd-1", type: str = "main", name: str | None = None, **extra) -> dict:
    return {"key": key, "hash": f"blake3:{key}", "name": name or key, "base": base, "type": type, **extra}


SD1 = ident("sd1-main")
SDXL = ident("sdxl-main", base="sdxl")
REFINER = ident("sdxl-refiner", base="sdxl-refiner")
LORA_A = ident("lora-a", type="lora")
LORA_B = ident("lora-b", type="lora")
XL_LORA = ident("xl-lora", base="sdxl", type="lora")
VAE = ident("vae-1", type="vae")


class Models:
    """A stand-in for the models service: knows which keys are installed."""

    def __init__(self, *keys: str) -> None:
        self.keys = set(keys)
        self.asked: list[str] = []

    def exists(self, key: str) -> bool:
        self.asked.append(key)
        return key in self.keys


def failure(run, node: dict) -> NodeExecutionError:
    with pytest.raises(NodeExecutionError) as caught:
        only_output(run, node)
    return caught.value


# --- declarations -----------------------------------------------------------------------------------

# type -> (class name, title, tags, category, version, output type)
DECLARED = {
    "model_identifier": ("ModelIdentifierInvocation", "Any Model", ["model"], "model", "1.0.1",
                         "model_identifier_output"),
    "main_model_loader": ("MainModelLoaderInvocation", "Main Model - SD1.5, SD2", ["model"], "model", "1.0.4",
                          "model_loader_output"),
    "vae_loader": ("VAELoaderInvocation", "VAE Model - SD1.5, SD2, SDXL, SD3, FLUX", ["vae", "model"], "model",
                   "1.0.4", "vae_output"),
    "lora_loader": ("LoRALoaderInvocation", "Apply LoRA - SD1.5", ["model"], "model", "1.0.4",
                    "lora_loader_output"),
    "lora_selector": ("LoRASelectorInvocation", "Select LoRA", ["model"], "model", "1.0.3", "lora_selector_output"),
    "lora_collection_loader": ("LoRACollectionLoader", "Apply LoRA Collection - SD1.5", ["model"], "model", "1.1.3",
                               "lora_loader_output"),
    "sdxl_lora_loader": ("SDXLLoRALoaderInvocation", "Apply LoRA - SDXL", ["lora", "model"], "model", "1.0.5",
                         "sdxl_lora_loader_output"),
    "sdxl_lora_collection_loader": ("SDXLLoRACollectionLoader", "Apply LoRA Collection - SDXL", ["model"], "model",
                                    "1.1.3", "sdxl_lora_loader_output"),
    "seamless": ("SeamlessModeInvocation", "Apply Seamless - SD1.5, SDXL", ["seamless", "model"], "model", "1.0.2",
                 "seamless_output"),
    "freeu": ("FreeUInvocation", "Apply FreeU - SD1.5, SDXL", ["freeu"], "model", "1.0.2", "unet_output"),
    "sdxl_model_loader": ("SDXLModelLoaderInvocation", "Main Model - SDXL", ["model", "sdxl"], "model", "1.0.4",
                          "sdxl_model_loader_output"),
    "sdxl_refiner_model_loader": ("SDXLRefinerModelLoaderInvocation", "Refiner Model - SDXL",
                                  ["model", "sdxl", "refiner"], "model", "1.0.4", "sdxl_refiner_model_loader_output"),
    "clip_skip": ("CLIPSkipInvocation", "Apply CLIP Skip - SD1.5, SDXL", ["clipskip", "clip", "skip"], "prompt",
                  "1.1.1", "clip_skip_output"),
}

# output type -> (class name, fields in declaration order)
OUTPUTS = {
    "unet_output": ("UNetOutput", ["unet"]),
    "clip_output": ("CLIPOutput", ["clip"]),
    "model_loader_output": ("ModelLoaderOutput", ["vae", "clip", "unet"]),
    "model_identifier_output": ("ModelIdentifierOutput", ["model"]),
    "lora_selector_output": ("LoRASelectorOutput", ["lora"]),
    "seamless_output": ("SeamlessModeOutput", ["unet", "vae"]),
    "sdxl_model_loader_output": ("SDXLModelLoaderOutput", ["unet", "clip", "clip2", "vae"]),
    "sdxl_refiner_model_loader_output": ("SDXLRefinerModelLoaderOutput", ["unet", "clip2", "vae"]),
    "clip_skip_output": ("CLIPSkipInvocationOutput", ["clip"]),
    "vae_output": ("VAEOutput", ["vae"]),
    "lora_loader_output": ("LoRALoaderOutput", ["unet", "clip"]),
    "sdxl_lora_loader_output": ("SDXLLoRALoaderOutput", ["unet", "clip", "clip2"]),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declarations_match_invokeai(node_type):
    cls = InvocationRegistry.get_invocation_class(node_type)
    class_name, title, tags, category, version, output_type = DECLARED[node_type]
    assert cls.__name__ == class_name
    assert (cls.UIConfig.title, cls.UIConfig.tags, cls.UIConfig.category, cls.UIConfig.version) == (
        title, tags, category, version)
    assert cls.UIConfig.classification.value == "stable"
    assert cls.get_output_annotation().get_type() == output_type
    assert cls.model_fields["use_cache"].default is True


def test_the_module_registers_exactly_these_nodes():
    mine = {t for t, c in InvocationRegistry.invocation_classes().items() if c.__module__ == loader_nodes.__name__}
    assert mine == set(DECLARED)


@pytest.mark.parametrize("output_type", sorted(OUTPUTS))
def test_output_classes(output_type):
    class_name, fields = OUTPUTS[output_type]
    cls = InvocationRegistry.get_output_class(output_type)
    assert cls.__name__ == class_name
    assert [f for f in cls.model_fields if f != "type"] == fields


def test_shared_outputs_are_reused_not_redefined():
    from invokeai_provider.operators.sd import model_fields as model_outputs
    assert loader_nodes.VAEOutput is model_outputs.VAEOutput
    assert loader_nodes.LoRALoaderOutput is model_outputs.LoRALoaderOutput
    assert loader_nodes.SDXLLoRALoaderOutput is model_outputs.SDXLLoRALoaderOutput
    assert InvocationRegistry.get_output_class("vae_output") is model_outputs.VAEOutput
    assert issubclass(loader_nodes.ModelLoaderOutput, (loader_nodes.UNetOutput, loader_nodes.CLIPOutput,
                                                       model_outputs.VAEOutput))


def extra(node_type: str, field: str) -> dict:
    return InvocationRegistry.get_invocation_class(node_type).model_fields[field].json_schema_extra


# node type -> {field: (default or REQUIRED, input kind)}
REQUIRED = object()
INPUTS = {
    "model_identifier": {"model": (REQUIRED, "any")},
    "main_model_loader": {"model": (REQUIRED, "any")},
    "sdxl_model_loader": {"model": (REQUIRED, "any")},
    "sdxl_refiner_model_loader": {"model": (REQUIRED, "any")},
    "vae_loader": {"vae_model": (REQUIRED, "any")},
    "lora_loader": {"lora": (REQUIRED, "any"), "weight": (0.75, "any"), "unet": (None, "connection"),
                    "clip": (None, "connection")},
    "lora_selector": {"lora": (REQUIRED, "any"), "weight": (0.75, "any")},
    "lora_collection_loader": {"loras": (None, "any"), "unet": (None, "connection"), "clip": (None, "connection")},
    "sdxl_lora_loader": {"lora": (REQUIRED, "any"), "weight": (0.75, "any"), "unet": (None, "connection"),
                         "clip": (None, "connection"), "clip2": (None, "connection")},
    "sdxl_lora_collection_loader": {"loras": (None, "any"), "unet": (None, "connection"),
                                    "clip": (None, "connection"), "clip2": (None, "connection")},
    "seamless": {"unet": (None, "connection"), "vae": (None, "connection"), "seamless_y": (True, "any"),
                 "seamless_x": (True, "any")},
    "freeu": {"unet": (REQUIRED, "connection"), "b1": (1.2, "any"), "b2": (1.4, "any"), "s1": (0.9, "any"),
              "s2": (0.2, "any")},
    "clip_skip": {"clip": (REQUIRED, "connection"), "skipped_layers": (0, "any")},
}


@pytest.mark.parametrize("node_type", sorted(INPUTS))
def test_inputs_defaults_and_kinds(node_type):
    cls = InvocationRegistry.get_invocation_class(node_type)
    assert list(cls.input_fields()) == list(INPUTS[node_type])
    for name, (default, kind) in INPUTS[node_type].items():
        info = extra(node_type, name)
        assert info["input"] == kind, name
        if default is REQUIRED:
            assert info["orig_required"] is True, name
        else:
            assert info["orig_required"] is False and info["orig_default"] == default, name


def test_ui_model_filters_are_declared():
    assert extra("main_model_loader", "model")["ui_model_base"] == ["sd-1", "sd-2"]
    assert extra("main_model_loader", "model")["ui_model_type"] == "main"
    assert extra("sdxl_model_loader", "model")["ui_model_base"] == "sdxl"
    assert extra("sdxl_refiner_model_loader", "model")["ui_model_base"] == "sdxl-refiner"
    assert extra("vae_loader", "vae_model")["ui_model_base"] == ["sd-1", "sd-2", "sdxl", "sd-3", "flux", "flux2"]
    assert extra("vae_loader", "vae_model")["ui_model_type"] == "vae"
    assert extra("lora_loader", "lora")["ui_model_base"] == "sd-1"
    assert "ui_model_base" not in extra("lora_selector", "lora")
    assert extra("lora_collection_loader", "loras")["ui_model_base"] == ["sd-1", "sd-2"]
    assert extra("sdxl_lora_collection_loader", "loras")["ui_model_base"] == ["sdxl"]


@pytest.mark.parametrize("field,value", [("b1", 3.5), ("s2", -1.5)])
def test_freeu_factors_are_bounded(field, value):
    with pytest.raises(NodeValidationError):
        Graph.from_dict({"nodes": {"f": {"id": "f", "type": "freeu", field: value}}, "edges": []})


def test_clip_skip_refuses_negative_layers():
    with pytest.raises(NodeValidationError):
        Graph.from_dict({"nodes": {"c": {"id": "c", "type": "clip_skip", "skipped_layers": -1}}, "edges": []})


# --- loaders ----------------------------------------------------------------------------------------


def test_main_model_loader_splits_into_submodels(run):
    out = only_output(run, {"type": "main_model_loader", "model": SD1})
    assert out.get_type() == "model_loader_output"
    assert out.unet.unet.submodel_type == "unet"
    assert out.unet.scheduler.submodel_type == "scheduler"
    assert out.clip.tokenizer.submodel_type == "tokenizer"
    assert out.clip.text_encoder.submodel_type == "text_encoder"
    assert out.vae.vae.submodel_type == "vae"
    for part in (out.unet.unet, out.unet.scheduler, out.clip.tokenizer, out.clip.text_encoder, out.vae.vae):
        assert part.model_dump(mode="json", exclude={"submodel_type"}) == SD1
    assert out.unet.loras == [] and out.unet.seamless_axes == [] and out.unet.freeu_config is None
    assert out.clip.loras == [] and out.clip.skipped_layers == 0
    assert out.vae.seamless_axes == []


def test_main_model_loader_accepts_sd2(run):
    out = only_output(run, {"type": "main_model_loader", "model": ident("sd2", base="sd-2")})
    assert out.unet.unet.base == "sd-2"


def test_sdxl_model_loader_has_two_clips(run):
    out = only_output(run, {"type": "sdxl_model_loader", "model": SDXL})
    assert out.get_type() == "sdxl_model_loader_output"
    assert (out.unet.unet.submodel_type, out.unet.scheduler.submodel_type) == ("unet", "scheduler")
    assert (out.clip.tokenizer.submodel_type, out.clip.text_encoder.submodel_type) == ("tokenizer", "text_encoder")
    assert (out.clip2.tokenizer.submodel_type, out.clip2.text_encoder.submodel_type) == (
        "tokenizer_2", "text_encoder_2")
    assert out.vae.vae.submodel_type == "vae"
    assert out.clip2.tokenizer.key == "sdxl-main" and out.clip2.skipped_layers == 0 and out.clip2.loras == []


def test_sdxl_refiner_loader_has_only_clip2(run):
    out = only_output(run, {"type": "sdxl_refiner_model_loader", "model": REFINER})
    assert out.get_type() == "sdxl_refiner_model_loader_output"
    assert not hasattr(out, "clip")
    assert (out.clip2.tokenizer.submodel_type, out.clip2.text_encoder.submodel_type) == (
        "tokenizer_2", "text_encoder_2")
    assert out.unet.unet.base == "sdxl-refiner" and out.vae.vae.submodel_type == "vae"


def test_vae_loader_passes_the_identifier_as_is(run):
    out = only_output(run, {"type": "vae_loader", "vae_model": VAE})
    assert out.get_type() == "vae_output"
    assert out.vae.vae.model_dump(mode="json") == {**VAE, "submodel_type": None}
    assert out.vae.seamless_axes == []


def test_vae_loader_accepts_flux_vaes(run):
    out = only_output(run, {"type": "vae_loader", "vae_model": ident("fv", base="flux", type="vae")})
    assert out.vae.vae.base == "flux"


def test_model_identifier_passes_any_model(run):
    for model in (SD1, LORA_A, ident("t5", base="any", type="t5_encoder")):
        out = only_output(run, {"type": "model_identifier", "model": model})
        assert out.model.model_dump(mode="json") == {**model, "submodel_type": None}


def test_loader_without_model_is_missing_input(run):
    with pytest.raises(NodeExecutionError) as caught:
        only_output(run, {"type": "main_model_loader"})
    assert "missing value or connection for field model" in str(caught.value)


# --- model checks -----------------------------------------------------------------------------------


def test_uninstalled_model_fails_naming_node_field_and_key(run):
    run.services["models"] = Models("other")
    error = failure(run, {"type": "main_model_loader", "model": SD1})
    assert isinstance(error.cause, model_checks.ModelNotInstalledError)
    assert str(error.cause) == "node n (main_model_loader): field model: model key 'sd1-main' is not installed"
    assert error.cause.node_id == "n" and error.cause.field == "model"


def test_installed_model_passes_the_service_check(run):
    models = Models("sd1-main")
    run.services["models"] = models
    only_output(run, {"type": "main_model_loader", "model": SD1})
    assert models.asked == ["sd1-main"]


@pytest.mark.parametrize("node,field,key", [
    ({"type": "model_identifier", "model": SD1}, "model", "sd1-main"),
    ({"type": "sdxl_model_loader", "model": SDXL}, "model", "sdxl-main"),
    ({"type": "sdxl_refiner_model_loader", "model": REFINER}, "model", "sdxl-refiner"),
    ({"type": "vae_loader", "vae_model": VAE}, "vae_model", "vae-1"),
    ({"type": "lora_loader", "lora": LORA_A}, "lora", "lora-a"),
    ({"type": "sdxl_lora_loader", "lora": XL_LORA}, "lora", "xl-lora"),
    ({"type": "lora_collection_loader", "loras": {"lora": LORA_A, "weight": 1}}, "loras", "lora-a"),
    ({"type": "sdxl_lora_collection_loader", "loras": [{"lora": XL_LORA, "weight": 1}]}, "loras", "xl-lora"),
])
def test_every_loader_checks_the_models_service(run, node, field, key):
    from invokeai_provider.core.context import RunContext

    fresh = RunContext(store=run.store, services={"models": Models()})
    with pytest.raises(NodeExecutionError) as caught:
        only_output(fresh, node)
    assert isinstance(caught.value.cause, model_checks.ModelNotInstalledError)
    assert f"({node['type']}): field {field}: model key '{key}' is not installed" in str(caught.value)


def test_lora_selector_does_not_ask_the_service(run):
    run.services["models"] = Models()
    out = only_output(run, {"type": "lora_selector", "lora": LORA_A, "weight": 0.5})
    assert out.lora.model_dump(mode="json") == {"lora": {**LORA_A, "submodel_type": None}, "weight": 0.5}


@pytest.mark.parametrize("node,expected", [
    ({"type": "main_model_loader", "model": VAE}, "expected a main model, got model 'vae-1' (vae-1) of type vae"),
    ({"type": "main_model_loader", "model": SDXL}, ("expected a main model of base sd-1 or sd-2, got model "
                                                    "'sdxl-main' (sdxl-main) of base sdxl")),
    ({"type": "sdxl_model_loader", "model": SD1}, "expected a main model of base sdxl"),
    ({"type": "sdxl_model_loader", "model": REFINER}, "of base sdxl-refiner"),
    ({"type": "sdxl_refiner_model_loader", "model": SDXL}, "expected a main model of base sdxl-refiner"),
    ({"type": "vae_loader", "vae_model": SD1}, "field vae_model: expected a vae model"),
    ({"type": "vae_loader", "vae_model": ident("v", base="cogview4", type="vae")}, "of base cogview4"),
    ({"type": "lora_loader", "lora": SD1}, "field lora: expected a lora model"),
    ({"type": "lora_loader", "lora": XL_LORA}, "expected a lora model of base sd-1 or sd-2,"),
    ({"type": "sdxl_lora_loader", "lora": LORA_A}, "expected a lora model of base sdxl,"),
    ({"type": "lora_selector", "lora": VAE}, "field lora: expected a lora model"),
    ({"type": "lora_collection_loader", "loras": [{"lora": XL_LORA, "weight": 1}]},
     "field loras: expected a lora model of base sd-1 or sd-2"),
    ({"type": "sdxl_lora_collection_loader", "loras": [{"lora": LORA_A, "weight": 1}]},
     "field loras: expected a lora model of base sdxl"),
    ({"type": "lora_collection_loader", "loras": [{"lora": SD1, "weight": 1}]}, "expected a lora model, got"),
])
def test_wrong_model_kind_fails_without_a_service(run, node, expected):
    assert "models" not in run.services
    error = failure(run, node)
    assert isinstance(error.cause, model_checks.WrongModelKindError)
    assert str(error.cause).startswith(f"node n ({node['type']}): field ")
    assert expected in str(error.cause)


# --- LoRAs ------------------------------------------------------------------------------------------


def test_lora_loader_without_inputs_returns_nothing(run):
    out = only_output(run, {"type": "lora_loader", "lora": LORA_A})
    assert (out.unet, out.clip) == (None, None)


def test_lora_chain_to_clip_skip(run):
    run.services["models"] = Models("sd1-main", "lora-a", "lora-b")
    state = run_nodes(run, {
        "main": {"type": "main_model_loader", "model": SD1},
        "la": {"type": "lora_loader", "lora": LORA_A, "weight": 0.5},
        "lb": {"type": "lora_loader", "lora": LORA_B},
        "skip": {"type": "clip_skip", "skipped_layers": 2},
    }, [
        edge("main", "unet", "la", "unet"), edge("main", "clip", "la", "clip"),
        edge("la", "unet", "lb", "unet"), edge("la", "clip", "lb", "clip"),
        edge("lb", "clip", "skip", "clip"),
    ])
    [lb] = state.outputs_of("lb")
    assert [(applied.lora.key, applied.weight) for applied in lb.unet.loras] == [("lora-a", 0.5), ("lora-b", 0.75)]
    [skip] = state.outputs_of("skip")
    assert skip.get_type() == "clip_skip_output"
    assert skip.clip.skipped_layers == 2
    assert [(applied.lora.key, applied.weight) for applied in skip.clip.loras] == [("lora-a", 0.5), ("lora-b", 0.75)]
    assert skip.clip.text_encoder.submodel_type == "text_encoder"
    # upstream outputs are not changed by what downstream nodes did
    [main] = state.outputs_of("main")
    assert main.clip.loras == [] and main.clip.skipped_layers == 0
    [la] = state.outputs_of("la")
    assert [applied.lora.key for applied in la.clip.loras] == ["lora-a"]


def test_the_same_lora_twice_fails_naming_the_node(run):
    with pytest.raises(NodeExecutionError) as caught:
        run_nodes(run, {
            "main": {"type": "main_model_loader", "model": SD1},
            "first": {"type": "lora_loader", "lora": LORA_A},
            "again": {"type": "lora_loader", "lora": ident("lora-a", type="lora", name="renamed"), "weight": 1.0},
        }, [
            edge("main", "unet", "first", "unet"), edge("main", "clip", "first", "clip"),
            edge("first", "unet", "again", "unet"), edge("first", "clip", "again", "clip"),
        ])
    assert caught.value.node_id == "again"
    assert isinstance(caught.value.cause, model_checks.LoRAAlreadyAppliedError)
    assert str(caught.value.cause) == ("node again (lora_loader): field unet: LoRA 'lora-a' (renamed) is already "
                                       "applied to unet")


def test_the_same_lora_twice_on_clip_only(run):
    with pytest.raises(NodeExecutionError) as caught:
        run_nodes(run, {
            "main": {"type": "main_model_loader", "model": SD1},
            "first": {"type": "lora_loader", "lora": LORA_A},
            "again": {"type": "lora_loader", "lora": LORA_A},
        }, [edge("main", "clip", "first", "clip"), edge("first", "clip", "again", "clip")])
    assert "node again (lora_loader): field clip: LoRA 'lora-a'" in str(caught.value)


def test_sdxl_chain_lora_then_clip_skip(run):
    state = run_nodes(run, {
        "main": {"type": "sdxl_model_loader", "model": SDXL},
        "lora": {"type": "sdxl_lora_loader", "lora": XL_LORA, "weight": 0.3},
        "skip": {"type": "clip_skip", "skipped_layers": 1},
    }, [
        edge("main", "unet", "lora", "unet"), edge("main", "clip", "lora", "clip"),
        edge("main", "clip2", "lora", "clip2"), edge("lora", "clip2", "skip", "clip"),
    ])
    [out] = state.outputs_of("lora")
    assert out.get_type() == "sdxl_lora_loader_output"
    for part in (out.unet, out.clip, out.clip2):
        assert [(applied.lora.key, applied.weight) for applied in part.loras] == [("xl-lora", 0.3)]
    [skip] = state.outputs_of("skip")
    assert skip.clip.skipped_layers == 1 and skip.clip.text_encoder.submodel_type == "text_encoder_2"
    assert [applied.lora.key for applied in skip.clip.loras] == ["xl-lora"]


def test_sdxl_lora_twice_fails_on_clip2(run):
    with pytest.raises(NodeExecutionError) as caught:
        run_nodes(run, {
            "main": {"type": "sdxl_model_loader", "model": SDXL},
            "a": {"type": "sdxl_lora_loader", "lora": XL_LORA},
            "b": {"type": "sdxl_lora_loader", "lora": XL_LORA},
        }, [edge("main", "clip2", "a", "clip2"), edge("a", "clip2", "b", "clip2")])
    assert "node b (sdxl_lora_loader): field clip2: LoRA 'xl-lora'" in str(caught.value)


def test_selectors_collected_into_the_collection_loader(run):
    run.services["models"] = Models("sd1-main", "lora-a", "lora-b")
    state = run_nodes(run, {
        "main": {"type": "main_model_loader", "model": SD1},
        "sa": {"type": "lora_selector", "lora": LORA_A, "weight": 0.4},
        "sb": {"type": "lora_selector", "lora": LORA_B, "weight": 0.9},
        "sa2": {"type": "lora_selector", "lora": LORA_A, "weight": 0.1},
        "col": {"type": "collect"},
        "apply": {"type": "lora_collection_loader"},
    }, [
        edge("sa", "lora", "col", "item"), edge("sb", "lora", "col", "item"), edge("sa2", "lora", "col", "item"),
        edge("col", "collection", "apply", "loras"),
        edge("main", "unet", "apply", "unet"), edge("main", "clip", "apply", "clip"),
    ])
    [out] = state.outputs_of("apply")
    assert out.get_type() == "lora_loader_output"
    # a key repeated inside the collection is applied once, the first time it appears
    assert [(applied.lora.key, applied.weight) for applied in out.unet.loras] == [("lora-a", 0.4), ("lora-b", 0.9)]
    assert [(applied.lora.key, applied.weight) for applied in out.clip.loras] == [("lora-a", 0.4), ("lora-b", 0.9)]


def test_collection_loader_takes_a_single_lora_and_none(run):
    state = run_nodes(run, {
        "main": {"type": "main_model_loader", "model": SD1},
        "one": {"type": "lora_collection_loader", "loras": {"lora": LORA_B, "weight": 0.2}},
        "none": {"type": "lora_collection_loader"},
    }, [edge("main", "unet", "one", "unet"), edge("main", "clip", "none", "clip")])
    [one] = state.outputs_of("one")
    assert [(applied.lora.key, applied.weight) for applied in one.unet.loras] == [("lora-b", 0.2)] and one.clip is None
    [none] = state.outputs_of("none")
    assert none.clip.loras == [] and none.unet is None


def test_collection_loader_refuses_a_lora_applied_upstream(run):
    with pytest.raises(NodeExecutionError) as caught:
        run_nodes(run, {
            "main": {"type": "main_model_loader", "model": SD1},
            "first": {"type": "lora_loader", "lora": LORA_A},
            "col": {"type": "lora_collection_loader", "loras": [{"lora": LORA_A, "weight": 1}]},
        }, [edge("main", "unet", "first", "unet"), edge("first", "unet", "col", "unet")])
    assert "node col (lora_collection_loader): field unet: LoRA 'lora-a'" in str(caught.value)


def test_sdxl_collection_loader_applies_to_all_three(run):
    out_state = run_nodes(run, {
        "main": {"type": "sdxl_model_loader", "model": SDXL},
        "apply": {"type": "sdxl_lora_collection_loader",
                  "loras": [{"lora": XL_LORA, "weight": 0.6}, {"lora": ident("xl-2", base="sdxl", type="lora"),
                                                               "weight": 1.1}]},
    }, [edge("main", "unet", "apply", "unet"), edge("main", "clip", "apply", "clip"),
        edge("main", "clip2", "apply", "clip2")])
    [out] = out_state.outputs_of("apply")
    for part in (out.unet, out.clip, out.clip2):
        assert [(applied.lora.key, applied.weight) for applied in part.loras] == [("xl-lora", 0.6), ("xl-2", 1.1)]


# --- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("x,y,axes", [(True, True, ["x", "y"]), (True, False, ["x"]), (False, True, ["y"]),
                                      (False, False, [])])
def test_seamless_sets_axes_on_unet_and_vae(run, x, y, axes):
    state = run_nodes(run, {
        "main": {"type": "main_model_loader", "model": SD1},
        "seam": {"type": "seamless", "seamless_x": x, "seamless_y": y},
    }, [edge("main", "unet", "seam", "unet"), edge("main", "vae", "seam", "vae")])
    [out] = state.outputs_of("seam")
    assert out.get_type() == "seamless_output"
    assert out.unet.seamless_axes == axes and out.vae.seamless_axes == axes
    assert out.unet.unet.submodel_type == "unet" and out.vae.vae.submodel_type == "vae"


def test_seamless_without_inputs(run):
    out = only_output(run, {"type": "seamless"})
    assert (out.unet, out.vae) == (None, None)


def test_freeu_sets_its_config(run):
    state = run_nodes(run, {
        "main": {"type": "main_model_loader", "model": SD1},
        "lora": {"type": "lora_loader", "lora": LORA_A},
        "freeu": {"type": "freeu", "b1": 1.1, "b2": 1.2, "s1": 0.6, "s2": 0.4},
        "default": {"type": "freeu"},
    }, [edge("main", "unet", "lora", "unet"), edge("lora", "unet", "freeu", "unet"),
        edge("main", "unet", "default", "unet")])
    [out] = state.outputs_of("freeu")
    assert out.get_type() == "unet_output"
    assert out.unet.freeu_config.model_dump() == {"s1": 0.6, "s2": 0.4, "b1": 1.1, "b2": 1.2}
    assert [applied.lora.key for applied in out.unet.loras] == ["lora-a"]
    [default] = state.outputs_of("default")
    assert default.unet.freeu_config.model_dump() == {"s1": 0.9, "s2": 0.2, "b1": 1.2, "b2": 1.4}


def test_freeu_needs_a_unet_connection(run):
    with pytest.raises(NodeExecutionError) as caught:
        only_output(run, {"type": "freeu"})
    assert isinstance(caught.value.cause, RequiredConnectionError)


def test_clip_skip_adds_to_the_count_it_receives(run):
    state = run_nodes(run, {
        "main": {"type": "main_model_loader", "model": SD1},
        "one": {"type": "clip_skip", "skipped_layers": 1},
        "two": {"type": "clip_skip", "skipped_layers": 2},
        "zero": {"type": "clip_skip"},
    }, [edge("main", "clip", "one", "clip"), edge("one", "clip", "two", "clip"), edge("main", "clip", "zero", "clip")])
    assert state.outputs_of("one")[0].clip.skipped_layers == 1
    assert state.outputs_of("two")[0].clip.skipped_layers == 3
    assert state.outputs_of("zero")[0].clip.skipped_layers == 0


def test_clip_skip_needs_a_clip_connection(run):
    with pytest.raises(NodeExecutionError) as caught:
        only_output(run, {"type": "clip_skip", "skipped_layers": 1})
    assert isinstance(caught.value.cause, RequiredConnectionError)
