"""Metadata nodes: building metadata, reading it from images, and the linked getters."""

from __future__ import annotations

import io
import json
import logging
import typing

import pytest

from helpers import edge, only_output, run_nodes

from invokeai_provider import __version__
from invokeai_provider.errors import MissingInputError, NodeExecutionError, NodeValidationError
from invokeai_provider.graph.graph import Graph
from invokeai_provider.core.registry import InvocationRegistry


def single(run, **node):
    return only_output(run, node)


def parse(**node):
    return Graph.from_dict({"nodes": {"n": {"id": "n", **node}}, "edges": []})


def ident(key: str, name: str | None = None, base: str = "sd-1", type: str = "main", **extra) -> dict:
    return {"key": key, "hash": f"blake3:{key}", "name": name or key, "base": base, "type": type, **extra}


def write_png(run, name: str, metadata: dict | None) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if metadata is not None:
        info.add_text("invokeai_metadata", json.dumps(metadata))
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buffer, format="PNG", pnginfo=info)
    run.store.write("images", name, buffer.getvalue())


class Models:
    """A stand-in for the model service: knows which keys are installed."""

    def __init__(self, *keys: str) -> None:
        self.keys = set(keys)

    def exists(self, key: str) -> bool:
        return key in self.keys


# --- declarations -----------------------------------------------------------------------------------

# type -> (class name, title, version, classification, output type)
DECLARED = {
    "core_metadata": ("CoreMetadataInvocation", "Core Metadata", "2.2.0", "internal", "metadata_output"),
    "merge_metadata": ("MergeMetadataInvocation", "Metadata Merge", "1.0.1", "stable", "metadata_output"),
    "metadata": ("MetadataInvocation", "Metadata", "1.0.1", "stable", "metadata_output"),
    "metadata_field_extractor": ("MetadataFieldExtractorInvocation", "Metadata Field Extractor", "1.0.0",
                                 "deprecated", "string_output"),
    "metadata_from_image": ("MetadataFromImageInvocation", "Metadata From Image", "1.0.1", "beta",
                            "metadata_output"),
    "metadata_item": ("MetadataItemInvocation", "Metadata Item", "1.0.1", "stable", "metadata_item_output"),
    "metadata_item_linked": ("MetadataItemLinkedInvocation", "Metadata Item Linked", "1.0.1", "beta",
                             "metadata_output"),
    "metadata_to_bool": ("MetadataToBoolInvocation", "Metadata To Bool", "1.0.0", "beta", "boolean_output"),
    "metadata_to_bool_collection": ("MetadataToBoolCollectionInvocation", "Metadata To Bool Collection", "1.0.0",
                                    "beta", "boolean_collection_output"),
    "metadata_to_controlnets": ("MetadataToControlnetsInvocation", "Metadata To ControlNets", "1.2.0", "beta",
                                "md_control_list_output"),
    "metadata_to_float": ("MetadataToFloatInvocation", "Metadata To Float", "1.1.0", "beta", "float_output"),
    "metadata_to_float_collection": ("MetadataToFloatCollectionInvocation", "Metadata To Float Collection",
                                     "1.0.0", "beta", "float_collection_output"),
    "metadata_to_integer": ("MetadataToIntegerInvocation", "Metadata To Integer", "1.0.0", "beta",
                            "integer_output"),
    "metadata_to_integer_collection": ("MetadataToIntegerCollectionInvocation", "Metadata To Integer Collection",
                                       "1.0.0", "beta", "integer_collection_output"),
    "metadata_to_ip_adapters": ("MetadataToIPAdaptersInvocation", "Metadata To IP-Adapters", "1.2.0", "beta",
                                "md_ip_adapter_list_output"),
    "metadata_to_lora_collection": ("MetadataToLorasCollectionInvocation", "Metadata To LoRA Collection", "1.1.0",
                                    "beta", "metadata_to_lora_collection_output"),
    "metadata_to_loras": ("MetadataToLorasInvocation", "Metadata To LoRAs", "1.1.1", "beta", "lora_loader_output"),
    "metadata_to_model": ("MetadataToModelInvocation", "Metadata To Model", "1.3.0", "beta",
                          "metadata_to_model_output"),
    "metadata_to_scheduler": ("MetadataToSchedulerInvocation", "Metadata To Scheduler", "1.0.1", "beta",
                              "scheduler_output"),
    "metadata_to_sdlx_loras": ("MetadataToSDXLLorasInvocation", "Metadata To SDXL LoRAs", "1.1.1", "beta",
                               "sdxl_lora_loader_output"),
    "metadata_to_sdxl_model": ("MetadataToSDXLModelInvocation", "Metadata To SDXL Model", "1.3.0", "beta",
                               "metadata_to_sdxl_model_output"),
    "metadata_to_string": ("MetadataToStringInvocation", "Metadata To String", "1.0.0", "beta", "string_output"),
    "metadata_to_string_collection": ("MetadataToStringCollectionInvocation", "Metadata To String Collection",
                                      "1.0.0", "beta", "string_collection_output"),
    "metadata_to_t2i_adapters": ("MetadataToT2IAdaptersInvocation", "Metadata To T2I-Adapters", "1.2.0", "beta",
                                 "md_ip_adapters_output"),
    "metadata_to_vae": ("MetadataToVAEInvocation", "Metadata To VAE", "1.2.1", "beta", "vae_output"),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declarations_match_invokeai(node_type):
    cls = InvocationRegistry.get_invocation_class(node_type)
    class_name, title, version, classification, output_type = DECLARED[node_type]
    assert cls.__name__ == class_name
    assert (cls.UIConfig.title, cls.UIConfig.version, cls.UIConfig.category) == (title, version, "metadata")
    assert cls.UIConfig.tags == ["metadata"]
    assert cls.UIConfig.classification.value == classification
    assert cls.get_output_annotation().get_type() == output_type
    assert cls.model_fields["use_cache"].default is True


def test_the_family_registers_all_25_metadata_nodes():
    from invokeai_provider.operators.core import metadata as metadata_nodes
    mine = {t for t, c in InvocationRegistry.invocation_classes().items() if c.__module__ == metadata_nodes.__name__}
    assert mine == set(DECLARED)


def test_getters_take_metadata_by_connection_and_labels_directly():
    for node_type in DECLARED:
        if not node_type.startswith("metadata_to_"):
            continue
        fields = InvocationRegistry.get_invocation_class(node_type).model_fields
        extra = fields["metadata"].json_schema_extra
        assert (extra["input"], extra["field_kind"]) == ("connection", "internal"), node_type
        for name in ("label", "custom_label"):
            if name in fields:
                assert fields[name].json_schema_extra["input"] == "direct", (node_type, name)


CORE_FIELDS = [
    "generation_mode", "positive_prompt", "negative_prompt", "width", "height", "seed", "rand_device", "cfg_scale",
    "cfg_rescale_multiplier", "steps", "scheduler", "seamless_x", "seamless_y", "clip_skip", "model", "controlnets",
    "ipAdapters", "t2iAdapters", "loras", "strength", "init_image", "vae", "qwen3_encoder", "mistral_encoder",
    "ideogram4_caption", "hrf_enabled", "hrf_method", "hrf_strength", "positive_style_prompt",
    "negative_style_prompt", "refiner_model", "refiner_cfg_scale", "refiner_steps", "refiner_scheduler",
    "refiner_positive_aesthetic_score", "refiner_negative_aesthetic_score", "refiner_start",
]


def test_core_metadata_fields_are_all_optional_with_none_default():
    cls = InvocationRegistry.get_invocation_class("core_metadata")
    assert list(cls.input_fields()) == CORE_FIELDS
    for name, info in cls.input_fields().items():
        assert info.default is None and info.json_schema_extra["orig_required"] is False, name


def test_output_classes_and_scheduler_names():
    from invokeai_provider.operators.sd import model_fields as model_outputs
    names = typing.get_args(model_outputs.SCHEDULER_NAME_VALUES)
    assert len(names) == 31 and names[0] == "ddim" and names[-1] == "tcd" and "er_sde" in names
    expected = {
        "vae_output": ("VAEOutput", {"vae"}),
        "lora_loader_output": ("LoRALoaderOutput", {"unet", "clip"}),
        "sdxl_lora_loader_output": ("SDXLLoRALoaderOutput", {"unet", "clip", "clip2"}),
        "scheduler_output": ("SchedulerOutput", {"scheduler"}),
        "metadata_output": ("MetadataOutput", {"metadata"}),
        "metadata_item_output": ("MetadataItemOutput", {"item"}),
        "metadata_to_model_output": ("MetadataToModelOutput", {"model", "name", "unet", "vae", "clip"}),
        "metadata_to_sdxl_model_output": ("MetadataToSDXLModelOutput",
                                          {"model", "name", "unet", "clip", "clip2", "vae"}),
        "metadata_to_lora_collection_output": ("MetadataToLorasCollectionOutput", {"lora"}),
        "md_control_list_output": ("MDControlListOutput", {"control_list"}),
        "md_ip_adapter_list_output": ("MDIPAdapterListOutput", {"ip_adapter_list"}),
        "md_ip_adapters_output": ("MDT2IAdapterListOutput", {"t2i_adapter_list"}),
    }
    for output_type, (class_name, fields) in expected.items():
        cls = InvocationRegistry.get_output_class(output_type)
        assert cls.__name__ == class_name
        assert set(cls.model_fields) - {"type"} == fields, output_type


# --- building metadata ------------------------------------------------------------------------------


def test_items_collected_into_metadata(run):
    state = run_nodes(run, {
        "seed": {"type": "integer", "value": 1234},
        "i1": {"type": "metadata_item", "label": "seed"},
        "i2": {"type": "metadata_item", "label": "prompt", "value": "a fox"},
        "col": {"type": "collect"},
        "md": {"type": "metadata"},
    }, [
        edge("seed", "value", "i1", "value"),
        edge("i1", "item", "col", "item"),
        edge("i2", "item", "col", "item"),
        edge("col", "collection", "md", "items"),
    ])
    assert state.outputs_of("i1")[0].item.model_dump() == {"label": "seed", "value": 1234}
    assert state.outputs_of("md")[0].metadata.root == {"seed": 1234, "prompt": "a fox", "app_version": __version__}


def test_metadata_from_a_single_item(run):
    out = single(run, type="metadata", items={"label": "k", "value": [1, 2]})
    assert out.metadata.root == {"k": [1, 2], "app_version": __version__}


def test_metadata_item_requires_label_and_value(run):
    with pytest.raises(NodeExecutionError) as info:
        single(run, type="metadata_item", label="x")
    assert isinstance(info.value.__cause__, MissingInputError)
    assert "value" in str(info.value.__cause__)


def test_merge_metadata_later_wins(run):
    out = single(run, type="merge_metadata", collection=[{"a": 1, "b": 2}, {"b": 3, "c": {"d": 4}}])
    assert out.metadata.root == {"a": 1, "b": 3, "c": {"d": 4}}


def test_core_metadata_drops_unset_fields_and_keeps_extras(run):
    model = ident("m1", "Dreamshaper")
    out = single(run, type="core_metadata", generation_mode="txt2img", positive_prompt="a fox", seed=7,
                 cfg_scale=7.5, steps=30, scheduler="euler_a", model=model,
                 loras=[{"model": ident("l1", type="lora"), "weight": 0.75}], custom_extra={"x": 1})
    assert out.metadata.root == {
        "generation_mode": "txt2img", "positive_prompt": "a fox", "seed": 7, "cfg_scale": 7.5, "steps": 30,
        # exclude_none reaches into nested values, as in InvokeAI: no "submodel_type": null.
        "scheduler": "euler_a", "model": model, "loras": [{"model": ident("l1", type="lora"), "weight": 0.75}],
        "custom_extra": {"x": 1}, "app_version": __version__,
    }


def test_core_metadata_takes_values_from_edges(run):
    state = run_nodes(run, {
        "w": {"type": "integer", "value": 768},
        "core": {"type": "core_metadata", "height": 512},
    }, [edge("w", "value", "core", "width")])
    assert state.outputs_of("core")[0].metadata.root == {"width": 768, "height": 512, "app_version": __version__}


def test_core_metadata_validates_generation_mode():
    with pytest.raises(NodeValidationError):
        parse(type="core_metadata", generation_mode="txt2video")
    parse(type="core_metadata", generation_mode="wan_i2v")


# --- reading metadata from images -------------------------------------------------------------------


def test_metadata_from_image(run):
    write_png(run, "m.png", {"positive_prompt": "a fox", "seed": 42})
    write_png(run, "plain.png", None)
    out = single(run, type="metadata_from_image", image={"image_name": "m.png"})
    assert out.metadata.root == {"positive_prompt": "a fox", "seed": 42}
    out = single(run, type="metadata_from_image", image={"image_name": "plain.png"})
    assert out.metadata.root == {}


def test_metadata_from_image_feeds_getters(run):
    write_png(run, "m.png", {"seed": 42, "cfg_scale": "6.5", "positive_prompt": "a fox", "scheduler": "dpmpp_2m"})
    state = run_nodes(run, {
        "img": {"type": "metadata_from_image", "image": {"image_name": "m.png"}},
        "seed": {"type": "metadata_to_integer", "label": "seed", "default_value": 0},
        "cfg": {"type": "metadata_to_float", "label": "cfg_scale", "default_value": 1.0},
        "pos": {"type": "metadata_to_string", "label": "positive_prompt", "default_value": ""},
        "sch": {"type": "metadata_to_scheduler"},
    }, [edge("img", "metadata", dst, "metadata") for dst in ("seed", "cfg", "pos", "sch")])
    assert state.outputs_of("seed")[0].value == 42
    assert state.outputs_of("cfg")[0].value == 6.5
    assert state.outputs_of("pos")[0].value == "a fox"
    assert state.outputs_of("sch")[0].scheduler == "dpmpp_2m"


def test_metadata_field_extractor(run):
    write_png(run, "m.png", {"positive_prompt": "a fox", "seed": 42})
    write_png(run, "plain.png", None)
    assert single(run, type="metadata_field_extractor", image={"image_name": "m.png"},
                  key="positive_prompt").value == "a fox"
    with pytest.raises(NodeExecutionError, match="must be a string"):
        single(run, type="metadata_field_extractor", image={"image_name": "m.png"}, key="seed")
    with pytest.raises(NodeExecutionError, match="No key 'nope' found"):
        single(run, type="metadata_field_extractor", image={"image_name": "m.png"}, key="nope")
    with pytest.raises(NodeExecutionError, match="No metadata found"):
        single(run, type="metadata_field_extractor", image={"image_name": "plain.png"}, key="seed")


# --- metadata_item_linked ---------------------------------------------------------------------------


def test_item_linked_adds_to_incoming_metadata(run):
    out = single(run, type="metadata_item_linked", label="seed", value=99, metadata={"seed": 1, "steps": 20})
    assert out.metadata.root == {"seed": 99, "steps": 20, "app_version": __version__}


def test_item_linked_custom_label_and_new_dict(run):
    out = single(run, type="metadata_item_linked", custom_label="my_key", value={"nested": [1]})
    assert out.metadata.root == {"my_key": {"nested": [1]}, "app_version": __version__}


def test_item_linked_stores_a_vae_as_its_model(run):
    vae = ident("v1", type="vae", submodel_type="vae")
    state = run_nodes(run, {
        "src": {"type": "metadata_to_vae", "default_value": {"vae": ident("v1", type="vae")}},
        "link": {"type": "metadata_item_linked", "label": "vae"},
    }, [edge("src", "vae", "link", "value")])
    assert state.outputs_of("link")[0].metadata.root == {"vae": vae, "app_version": __version__}
    out = single(run, type="metadata_item_linked", label="vae", value={"vae": vae, "seamless_axes": []})
    assert out.metadata.root["vae"] == vae


@pytest.mark.parametrize("node_type, extra", [
    ("metadata_item_linked", {"value": 1}),
    ("metadata_to_string", {"default_value": ""}),
    ("metadata_to_integer", {"default_value": 0}),
    ("metadata_to_float_collection", {"default_value": []}),
])
def test_custom_label_is_required_with_the_custom_choice(node_type, extra):
    with pytest.raises(NodeValidationError, match="Custom Label"):
        parse(type=node_type, **extra)
    with pytest.raises(NodeValidationError, match="Custom Label"):
        parse(type=node_type, custom_label="   ", **extra)
    parse(type=node_type, custom_label="mine", **extra)


def test_label_choices_are_restricted():
    with pytest.raises(NodeValidationError):
        parse(type="metadata_to_integer", label="positive_prompt", default_value=0)
    parse(type="metadata_to_integer", label="cfg_scale_end_step", default_value=0)


# --- scalar and collection getters ------------------------------------------------------------------

MD = {"width": 640, "seed": "17", "cfg_scale": 5, "positive_prompt": "a fox", "seamless_x": 1, "seamless_y": 0,
      "my_ints": [1, 2, 3], "my_floats": [0.5, 1], "my_strs": ["a", "b"], "my_bools": [True, False],
      "scheduler": "lcm", "guidance": 3.5}


@pytest.mark.parametrize("node, expected", [
    ({"type": "metadata_to_integer", "label": "width", "default_value": 1}, 640),
    ({"type": "metadata_to_integer", "label": "seed", "default_value": 1}, 17),
    ({"type": "metadata_to_integer", "label": "height", "default_value": 512}, 512),
    ({"type": "metadata_to_float", "label": "cfg_scale", "default_value": 1.0}, 5.0),
    ({"type": "metadata_to_float", "label": "guidance", "default_value": 1.0}, 3.5),
    ({"type": "metadata_to_float", "custom_label": "absent", "default_value": 2.5}, 2.5),
    ({"type": "metadata_to_string", "label": "positive_prompt", "default_value": "x"}, "a fox"),
    ({"type": "metadata_to_string", "custom_label": "width", "default_value": "x"}, "640"),
    ({"type": "metadata_to_string", "label": "negative_prompt", "default_value": "none"}, "none"),
    ({"type": "metadata_to_bool", "label": "seamless_x", "default_value": False}, True),
    ({"type": "metadata_to_bool", "label": "seamless_y", "default_value": True}, False),
    ({"type": "metadata_to_bool", "custom_label": "absent", "default_value": True}, True),
])
def test_scalar_getters(run, node, expected):
    out = single(run, metadata=MD, **node)
    assert out.value == expected and type(out.value) is type(expected)


@pytest.mark.parametrize("node, expected", [
    ({"type": "metadata_to_integer_collection", "custom_label": "my_ints", "default_value": []}, [1, 2, 3]),
    ({"type": "metadata_to_float_collection", "custom_label": "my_floats", "default_value": []}, [0.5, 1.0]),
    ({"type": "metadata_to_string_collection", "custom_label": "my_strs", "default_value": []}, ["a", "b"]),
    ({"type": "metadata_to_bool_collection", "custom_label": "my_bools", "default_value": []}, [True, False]),
    ({"type": "metadata_to_integer_collection", "custom_label": "absent", "default_value": [9]}, [9]),
])
def test_collection_getters(run, node, expected):
    assert single(run, metadata=MD, **node).collection == expected


def test_getters_without_metadata_use_the_default(run):
    assert single(run, type="metadata_to_integer", label="seed", default_value=5).value == 5
    assert single(run, type="metadata_to_scheduler").scheduler == "euler"


def test_getter_default_value_is_required(run):
    with pytest.raises(NodeExecutionError) as info:
        single(run, type="metadata_to_integer", label="seed", metadata=MD)
    assert isinstance(info.value.__cause__, MissingInputError)


def test_scheduler_getter(run):
    assert single(run, type="metadata_to_scheduler", metadata=MD).scheduler == "lcm"
    assert single(run, type="metadata_to_scheduler", metadata={}, default_value="tcd").scheduler == "tcd"
    with pytest.raises(NodeExecutionError):
        single(run, type="metadata_to_scheduler", metadata={"scheduler": "not_a_scheduler"})
    with pytest.raises(NodeValidationError):
        parse(type="metadata_to_scheduler", default_value="not_a_scheduler")


# --- model getters ----------------------------------------------------------------------------------

MAIN = ident("main-1", "Dreamshaper 8")
DEFAULT_MAIN = ident("main-default", "Default Model")


def test_model_from_metadata(run):
    out = single(run, type="metadata_to_model", metadata={"model": {**MAIN, "submodel_type": "unet"}},
                 default_value=DEFAULT_MAIN)
    assert out.model.model_dump(mode="json") == {**MAIN, "submodel_type": None}
    assert out.name == "sd-1: Dreamshaper 8"
    assert out.unet.unet.submodel_type.value == "unet" and out.unet.unet.key == "main-1"
    assert out.unet.scheduler.submodel_type.value == "scheduler" and out.unet.loras == []
    assert out.clip.tokenizer.submodel_type.value == "tokenizer"
    assert out.clip.text_encoder.submodel_type.value == "text_encoder" and out.clip.skipped_layers == 0
    assert out.vae.vae.submodel_type.value == "vae" and out.vae.seamless_axes == []


def test_model_default_when_label_absent(run):
    out = single(run, type="metadata_to_model", metadata={"seed": 1}, default_value=DEFAULT_MAIN)
    assert out.model.key == "main-default" and out.name == "sd-1: Default Model"


def test_model_custom_label(run):
    out = single(run, type="metadata_to_model", custom_label="refiner_model", label="* CUSTOM LABEL *",
                 metadata={"refiner_model": ident("ref", base="sdxl-refiner")}, default_value=DEFAULT_MAIN)
    assert out.model.key == "ref" and out.name == "sdxl-refiner: ref"


def test_model_with_a_model_service(run):
    run.services["models"] = Models("main-default")
    # The recorded model is not installed: InvokeAI falls back to the default.
    out = single(run, type="metadata_to_model", metadata={"model": MAIN}, default_value=DEFAULT_MAIN)
    assert out.model.key == "main-default"
    run.services["models"] = Models("main-1", "main-default")
    out = single(run, type="metadata_to_model", metadata={"model": MAIN}, default_value=DEFAULT_MAIN)
    assert out.model.key == "main-1"
    # Neither installed: unknown model.
    run.services["models"] = Models()
    with pytest.raises(NodeExecutionError, match="Unknown model: main-default"):
        single(run, type="metadata_to_model", metadata={"model": MAIN}, default_value=DEFAULT_MAIN)


def test_model_entry_that_is_not_an_identifier_fails_clearly(run):
    with pytest.raises(NodeExecutionError, match="not a complete model identifier"):
        single(run, type="metadata_to_model", metadata={"model": {"key": "k"}}, default_value=DEFAULT_MAIN)


def test_sdxl_model(run):
    sdxl = ident("xl", "Juggernaut", base="sdxl")
    out = single(run, type="metadata_to_sdxl_model", metadata={"model": sdxl}, default_value=DEFAULT_MAIN)
    assert out.name == "sdxl: Juggernaut"
    assert out.clip.tokenizer.submodel_type.value == "tokenizer"
    assert out.clip2.tokenizer.submodel_type.value == "tokenizer_2"
    assert out.clip2.text_encoder.submodel_type.value == "text_encoder_2"
    assert out.unet.unet.key == out.vae.vae.key == "xl"


def test_vae_getter(run):
    default = {"vae": ident("vae-default", type="vae"), "seamless_axes": ["x"]}
    out = single(run, type="metadata_to_vae", metadata={"vae": ident("vae-1", type="vae")}, default_value=default)
    assert out.vae.vae.key == "vae-1" and out.vae.vae.submodel_type.value == "vae"
    out = single(run, type="metadata_to_vae", metadata={}, default_value=default)
    assert out.vae.vae.key == "vae-default" and out.vae.seamless_axes == []


# --- LoRAs ------------------------------------------------------------------------------------------

LORA_A = ident("lora-a", "Detail", type="lora")
LORA_B = ident("lora-b", "Style", type="lora")
UNET = {"unet": {**MAIN, "submodel_type": "unet"}, "scheduler": {**MAIN, "submodel_type": "scheduler"},
        "loras": [{"lora": LORA_A, "weight": 0.1}]}
CLIP = {"tokenizer": {**MAIN, "submodel_type": "tokenizer"}, "text_encoder": {**MAIN, "submodel_type": "text_encoder"}}
LORA_MD = {"loras": [{"model": LORA_A, "weight": 0.9}, {"model": LORA_B, "weight": "0.5"}]}


def lora_weights(field) -> dict:
    return {lora.lora.key: lora.weight for lora in field.loras}


def test_loras_applied_to_unet_and_clip(run, caplog):
    with caplog.at_level(logging.INFO, logger="invokeai_provider.node"):
        out = single(run, type="metadata_to_loras", metadata=LORA_MD, unet=UNET, clip=CLIP)
    # lora-a was already on the UNet: kept with its own weight.
    assert lora_weights(out.unet) == {"lora-a": 0.1, "lora-b": 0.5}
    assert lora_weights(out.clip) == {"lora-a": 0.9, "lora-b": 0.5}
    assert 'LoRA "lora-a" already applied to unet' in caplog.text


def test_loras_without_inputs_or_metadata(run):
    out = single(run, type="metadata_to_loras", metadata=LORA_MD)
    assert out.unet is None and out.clip is None
    out = single(run, type="metadata_to_loras", unet=UNET)
    assert lora_weights(out.unet) == {"lora-a": 0.1}


def test_loras_not_installed_are_skipped(run):
    run.services["models"] = Models("lora-b")
    out = single(run, type="metadata_to_loras", metadata=LORA_MD, clip=CLIP)
    assert lora_weights(out.clip) == {"lora-b": 0.5}


def test_sdxl_loras(run):
    out = single(run, type="metadata_to_sdlx_loras", metadata=LORA_MD, clip=CLIP, clip2=CLIP)
    assert out.unet is None
    assert lora_weights(out.clip) == lora_weights(out.clip2) == {"lora-a": 0.9, "lora-b": 0.5}


def test_lora_collection(run):
    given = [{"lora": LORA_A, "weight": 0.3}, {"lora": LORA_A, "weight": 0.4}]
    metadata = {"loras": [{"model": LORA_A, "weight": 1.0}, {"lora": LORA_B, "weight": 0.6}]}
    out = single(run, type="metadata_to_lora_collection", metadata=metadata, loras=given)
    assert [(lora.lora.key, lora.weight) for lora in out.lora] == [("lora-a", 0.3), ("lora-b", 0.6)]


def test_lora_collection_single_input_custom_label_and_blank_label(run):
    metadata = {"my_loras": [{"model": LORA_B, "weight": 0.2}], "loras": [{"model": LORA_A, "weight": 0.7}]}
    out = single(run, type="metadata_to_lora_collection", metadata=metadata, custom_label=" my_loras ",
                 loras={"lora": LORA_A, "weight": 1})
    assert [(lora.lora.key, lora.weight) for lora in out.lora] == [("lora-a", 1.0), ("lora-b", 0.2)]
    out = single(run, type="metadata_to_lora_collection", metadata=metadata, custom_label="  ")
    assert [(lora.lora.key, lora.weight) for lora in out.lora] == [("lora-a", 0.7)]


# --- ControlNets and adapters -----------------------------------------------------------------------

CN_MODEL = ident("cn-1", "canny", type="controlnet")
CN_ENTRY = {"image": {"image_name": "ctrl.png"}, "processed_image": {"image_name": "proc.png"},
            "control_model": CN_MODEL, "control_weight": 0.8, "begin_step_percent": 0.1, "end_step_percent": 0.9,
            "control_mode": "more_control", "resize_mode": "crop_resize"}


def test_controlnets_from_metadata(run):
    out = single(run, type="metadata_to_controlnets", metadata={"controlnets": [CN_ENTRY]})
    [control] = out.control_list
    assert control.model_dump(mode="json") == {
        "image": {"image_name": "ctrl.png"}, "control_model": {**CN_MODEL, "submodel_type": None},
        "control_weight": 0.8, "begin_step_percent": 0.1, "end_step_percent": 0.9, "control_mode": "more_control",
        "resize_mode": "crop_resize",
    }


def test_controlnets_append_to_a_single_input(run):
    existing = {"image": {"image_name": "a.png"}, "control_model": ident("cn-0", type="controlnet")}
    out = single(run, type="metadata_to_controlnets", metadata={"controlnets": [CN_ENTRY]}, control_list=existing)
    assert [c.control_model.key for c in out.control_list] == ["cn-0", "cn-1"]


def test_controlnets_no_metadata_passes_input_through(run):
    existing = {"image": {"image_name": "a.png"}, "control_model": ident("cn-0", type="controlnet")}
    out = single(run, type="metadata_to_controlnets", control_list=existing)
    assert out.control_list.control_model.key == "cn-0"
    assert single(run, type="metadata_to_controlnets").control_list == []


@pytest.mark.parametrize("change, message", [
    ({"control_weight": 2.5}, "within -1 to 2"),
    ({"begin_step_percent": 0.9, "end_step_percent": 0.1}, "Begin step percent"),
])
def test_controlnet_entries_are_validated(run, change, message):
    with pytest.raises(NodeExecutionError, match=message):
        single(run, type="metadata_to_controlnets", metadata={"controlnets": [{**CN_ENTRY, **change}]})


def test_controlnet_with_uninstalled_model_fails(run):
    run.services["models"] = Models()
    with pytest.raises(NodeExecutionError, match="Unknown model: cn-1"):
        single(run, type="metadata_to_controlnets", metadata={"controlnets": [CN_ENTRY]})


IPA_MODEL = ident("ipa-1", "ip_adapter_sd15", type="ip_adapter")
ENCODER = ident("enc-1", "ip_adapter_sd_image_encoder", base="any", type="clip_vision")
IPA_ENTRY = {"image": {"image_name": "ref.png"}, "ip_adapter_model": IPA_MODEL, "image_encoder_model": ENCODER,
             "weight": [0.5, 0.7], "begin_step_percent": 0, "end_step_percent": 0.5, "method": "style",
             "target_blocks": ["up_blocks.1"]}


def test_ip_adapters_from_metadata(run):
    existing = {**IPA_ENTRY, "ip_adapter_model": ident("ipa-0", type="ip_adapter")}
    out = single(run, type="metadata_to_ip_adapters", metadata={"ipAdapters": [IPA_ENTRY]},
                 ip_adapter_list=[existing])
    first, added = out.ip_adapter_list
    assert first.ip_adapter_model.key == "ipa-0"
    assert added.ip_adapter_model.key == "ipa-1" and added.image_encoder_model.key == "enc-1"
    assert added.weight == [0.5, 0.7] and added.end_step_percent == 0.5
    # The recorded method is not carried over (as in InvokeAI): the IP-Adapter node's default applies.
    assert (added.method, added.target_blocks) == ("full", ["block"])


def test_ip_adapter_without_encoder_needs_the_model_manager(run):
    entry = {k: v for k, v in IPA_ENTRY.items() if k not in ("image_encoder_model", "target_blocks")}
    entry["clip_vision_model"] = "ViT-H"
    with pytest.raises(NodeExecutionError, match="image_encoder_model"):
        single(run, type="metadata_to_ip_adapters", metadata={"ipAdapters": [entry]})


T2I_MODEL = ident("t2i-1", "sketch", type="t2i_adapter")
T2I_ENTRY = {"image": {"image_name": "sketch.png"}, "t2i_adapter_model": T2I_MODEL, "weight": 0.6,
             "begin_step_percent": 0.0, "end_step_percent": 0.8, "resize_mode": "just_resize_simple"}


def test_t2i_adapters_from_metadata(run):
    out = single(run, type="metadata_to_t2i_adapters", metadata={"t2iAdapters": [T2I_ENTRY, T2I_ENTRY]})
    assert len(out.t2i_adapter_list) == 2
    adapter = out.t2i_adapter_list[0]
    assert adapter.t2i_adapter_model.key == "t2i-1" and adapter.weight == 0.6
    assert adapter.resize_mode == "just_resize_simple" and adapter.end_step_percent == 0.8
    with pytest.raises(NodeExecutionError, match="greater than or equal to 0"):
        single(run, type="metadata_to_t2i_adapters", metadata={"t2iAdapters": [{**T2I_ENTRY, "weight": -0.5}]})


def test_core_metadata_round_trips_through_getters(run):
    """core_metadata -> getters: the recorded values come back."""
    state = run_nodes(run, {
        "core": {"type": "core_metadata", "seed": 5, "model": MAIN, "controlnets": [CN_ENTRY],
                 "loras": [{"model": LORA_B, "weight": 0.25}]},
        "seed": {"type": "metadata_to_integer", "label": "seed", "default_value": 0},
        "model": {"type": "metadata_to_model", "default_value": DEFAULT_MAIN},
        "cn": {"type": "metadata_to_controlnets"},
        "loras": {"type": "metadata_to_lora_collection"},
    }, [edge("core", "metadata", dst, "metadata") for dst in ("seed", "model", "cn", "loras")])
    assert state.outputs_of("seed")[0].value == 5
    assert state.outputs_of("model")[0].model.key == "main-1"
    assert state.outputs_of("cn")[0].control_list[0].control_model.key == "cn-1"
    assert [(lora.lora.key, lora.weight) for lora in state.outputs_of("loras")[0].lora] == [("lora-b", 0.25)]


def test_results_survive_a_json_round_trip(run):
    """Outputs are stored as JSON between tasks: every output of this family must validate back."""
    from invokeai_provider.graph.engine import ExecutionState

    state = run_nodes(run, {
        "item": {"type": "metadata_item", "label": "k", "value": {"a": [1, 2]}},
        "core": {"type": "core_metadata", "seed": 5, "model": MAIN, "extra_field": "kept"},
        "model": {"type": "metadata_to_sdxl_model", "metadata": {"model": MAIN}, "default_value": DEFAULT_MAIN},
        "loras": {"type": "metadata_to_sdlx_loras", "metadata": LORA_MD, "unet": UNET, "clip": CLIP},
        "cn": {"type": "metadata_to_controlnets", "metadata": {"controlnets": [CN_ENTRY]}},
        "ipa": {"type": "metadata_to_ip_adapters", "metadata": {"ipAdapters": [IPA_ENTRY]}},
        "t2i": {"type": "metadata_to_t2i_adapters", "metadata": {"t2iAdapters": [T2I_ENTRY]}},
        "sch": {"type": "metadata_to_scheduler", "metadata": MD},
        "col": {"type": "metadata_to_lora_collection", "metadata": LORA_MD},
    })
    restored = ExecutionState.from_json(state.to_json())
    assert restored.graph.nodes["core"].model_dump()["extra_field"] == "kept"
    for exec_id, output in state.results.items():
        assert restored.results[exec_id] == output, exec_id
