"""Stable Diffusion generation on tiny random-weight models: text-to-image, image-to-image, inpainting,
every scheduler, SDXL, and the stored PNGs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from helpers import SHARED_WORKFLOWS, edge, sd1_graph
from PIL import Image

from invokeai_provider import __version__
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.binding import bind_model_fields
from invokeai_provider.core.taxonomy import SubModelType
from invokeai_provider.models.stable_diffusion.schedulers import SCHEDULER_NAME_VALUES

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def run(doc: dict, model_run, registry):
    return run_graph(Graph.from_dict(bind_model_fields(doc, registry)), model_run)


def png_of(model_run, state, node: str = "decode") -> bytes:
    [output] = state.outputs_of(node)
    return model_run.store.read("images", output.image.image_name)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def test_text_to_image_is_deterministic_per_seed(model_run, tiny_registry):
    first = png_of(model_run, run(sd1_graph(seed=7), model_run, tiny_registry))
    again = png_of(model_run, run(sd1_graph(seed=7), model_run, tiny_registry))
    other = png_of(model_run, run(sd1_graph(seed=8), model_run, tiny_registry))
    assert first == again  # byte-identical PNGs
    assert Image.open(io.BytesIO(first)).size == (64, 64)
    assert np.abs(pixels(first) - pixels(other)).mean() > 1


def test_progress_is_reported_for_every_step(model_run, tiny_registry):
    events = []
    model_run.on_progress = events.append
    run(sd1_graph(steps=3), model_run, tiny_registry)
    steps = [e["step"] for e in events if e.get("node_id") == "denoise" and "step" in e]
    assert steps == [1, 2, 3]


def test_cancel_stops_at_the_next_step(model_run, tiny_registry):
    from invokeai_provider.errors import CanceledError

    def cancel_at_first_step(event):
        if event.get("step") == 1:
            model_run.cancel_event.set()

    model_run.on_progress = cancel_at_first_step
    with pytest.raises(CanceledError):
        run(sd1_graph(steps=5), model_run, tiny_registry)


def latents_of(model_run, name: str) -> torch.Tensor:
    from safetensors.torch import load

    return load(model_run.store.read("tensors", name + ".safetensors"))["tensor"]


def test_image_to_image_at_denoising_start_one_returns_the_input_latents(model_run, tiny_registry):
    first = run(sd1_graph(), model_run, tiny_registry)
    image_name = first.outputs_of("decode")[0].image.image_name
    doc = sd1_graph(extra_nodes={"encode": {"type": "i2l", "image": {"image_name": image_name}}},
                    extra_edges=[edge("encode", "latents", "denoise", "latents"), edge("model", "vae", "encode", "vae")],
                    denoise={"denoising_start": 1.0})
    state = run(doc, model_run, tiny_registry)
    encoded = latents_of(model_run, state.outputs_of("encode")[0].latents.latents_name)
    denoised = latents_of(model_run, state.outputs_of("denoise")[0].latents.latents_name)
    assert torch.equal(encoded, denoised)


def test_image_to_image_changes_the_latents_partly(model_run, tiny_registry):
    first = run(sd1_graph(), model_run, tiny_registry)
    image_name = first.outputs_of("decode")[0].image.image_name
    doc = sd1_graph(extra_nodes={"encode": {"type": "i2l", "image": {"image_name": image_name}}},
                    extra_edges=[edge("encode", "latents", "denoise", "latents"), edge("model", "vae", "encode", "vae")],
                    denoise={"denoising_start": 0.5})
    state = run(doc, model_run, tiny_registry)
    encoded = latents_of(model_run, state.outputs_of("encode")[0].latents.latents_name)
    denoised = latents_of(model_run, state.outputs_of("denoise")[0].latents.latents_name)
    assert not torch.equal(encoded, denoised)


def test_inpainting_keeps_the_unmasked_region(model_run, tiny_registry):
    source = run(sd1_graph(seed=3), model_run, tiny_registry)
    image_name = source.outputs_of("decode")[0].image.image_name
    model_run.store.write("images", "mask.png", _mask_png((0, 0, 32, 64)))  # black left half: repaint
    doc = _inpaint_graph("tiny-sd1", 11, image_name, "mask.png")
    state = run(doc, model_run, tiny_registry)
    encoded = latents_of(model_run, state.outputs_of("encode")[0].latents.latents_name)
    result = latents_of(model_run, state.outputs_of("denoise")[0].latents.latents_name)
    assert torch.allclose(result[..., 4:], encoded[..., 4:], atol=1e-5)  # kept (mask 1) region, latent columns 4-7
    assert not torch.allclose(result[..., :4], encoded[..., :4], atol=1e-3)  # repainted region changed


def test_inpainting_model_runs_with_a_mask(model_run, tiny_registry):
    source = run(sd1_graph(seed=3), model_run, tiny_registry)
    image_name = source.outputs_of("decode")[0].image.image_name
    model_run.store.write("images", "m.png", _mask_png((16, 16, 48, 48)))
    doc = _inpaint_graph("tiny-sd1-inpaint", 7, image_name, "m.png", masked_image=True)
    state = run(doc, model_run, tiny_registry)
    assert state.outputs_of("mask")[0].denoise_mask.masked_latents_name is not None
    assert state.outputs_of("decode")[0].width == 64


def _mask_png(repaint: tuple[int, int, int, int]) -> bytes:
    """A 64x64 mask: white keeps, the black ``repaint`` box is repainted."""
    mask = Image.new("L", (64, 64), 255)
    mask.paste(0, repaint)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def _inpaint_graph(model: str, seed: int, image_name: str, mask_name: str, *, masked_image: bool = False) -> dict:
    """Text-to-image over the encoded ``image_name``, denoised only where the mask is black."""
    mask = {"type": "create_denoise_mask", "mask": {"image_name": mask_name}}
    if masked_image:  # an inpainting model also takes the masked image's latents
        mask["image"] = {"image_name": image_name}
    return sd1_graph(model, seed=seed, extra_nodes={
        "encode": {"type": "i2l", "image": {"image_name": image_name}}, "mask": mask,
    }, extra_edges=[edge("encode", "latents", "denoise", "latents"), edge("model", "vae", "encode", "vae"),
                    edge("model", "vae", "mask", "vae"), edge("mask", "denoise_mask", "denoise", "denoise_mask")])


@pytest.mark.parametrize("scheduler", list(SCHEDULER_NAME_VALUES.__args__))
def test_every_scheduler_runs_two_steps(model_run, tiny_registry, scheduler):
    state = run(sd1_graph(steps=2, scheduler=scheduler, size=32), model_run, tiny_registry)
    image = pixels(png_of(model_run, state))
    assert image.shape == (32, 32, 3)


def test_sdxl_text_to_image(model_run, tiny_registry):
    nodes = {
        "model": {"type": "sdxl_model_loader", "model": "tiny-sdxl"},
        "pos": {"type": "sdxl_compel_prompt", "prompt": "a cat", "style": "oil painting", "target_width": 64,
                "target_height": 64, "original_width": 64, "original_height": 64},
        "neg": {"type": "sdxl_compel_prompt", "prompt": ""},
        "noise": {"type": "noise", "seed": 1, "width": 64, "height": 64},
        "denoise": {"type": "denoise_latents", "steps": 2},
        "decode": {"type": "l2i"},
    }
    edges = [edge("model", "clip", "pos", "clip"), edge("model", "clip2", "pos", "clip2"),
             edge("model", "clip", "neg", "clip"), edge("model", "clip2", "neg", "clip2"),
             edge("model", "unet", "denoise", "unet"), edge("pos", "conditioning", "denoise", "positive_conditioning"),
             edge("neg", "conditioning", "denoise", "negative_conditioning"), edge("noise", "noise", "denoise", "noise"),
             edge("denoise", "latents", "decode", "latents"), edge("model", "vae", "decode", "vae")]
    doc = {"id": "xl", "nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": edges}
    state = run(doc, model_run, tiny_registry)
    assert state.outputs_of("decode")[0].width == 64
    cond = state.outputs_of("pos")[0].conditioning.conditioning_name
    from safetensors.torch import load

    tensors = load(model_run.store.read("conditioning", cond + ".safetensors"))
    assert set(tensors) == {"embeds", "pooled_embeds", "add_time_ids"}
    assert tensors["add_time_ids"].tolist() == [[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]


def test_png_chunks_parse_back_into_graph_and_metadata(model_run, tiny_registry):
    doc = sd1_graph(extra_nodes={"meta": {"type": "metadata_item", "label": "seed", "value": 7},
                                 "collect_meta": {"type": "metadata"}},
                    extra_edges=[edge("meta", "item", "collect_meta", "items"),
                                 edge("collect_meta", "metadata", "decode", "metadata")])
    bound = bind_model_fields(doc, tiny_registry)
    model_run.graph_json = bound
    model_run.workflow_json = {"name": "wf"}
    state = run_graph(Graph.from_dict(bound), model_run)
    info = Image.open(io.BytesIO(png_of(model_run, state))).info
    assert json.loads(info["invokeai_metadata"]) == {"seed": 7, "app_version": __version__}
    assert json.loads(info["invokeai_graph"])["nodes"]["denoise"]["type"] == "denoise_latents"
    assert Graph.from_dict(json.loads(info["invokeai_graph"])).is_valid()
    assert json.loads(info["invokeai_workflow"]) == {"name": "wf"}


def test_generation_without_a_model_service_names_the_node(run, tiny_registry):
    doc = bind_model_fields(sd1_graph(), tiny_registry)
    with pytest.raises(NodeExecutionError, match=r"node pos \(compel\): field clip: no model service"):
        run_graph(Graph.from_dict(doc), run)


@pytest.mark.skipif(not SHARED_WORKFLOWS.is_dir(), reason="shared InvokeAI workflows not present")
@pytest.mark.parametrize("name, models", [
    ("text-to-image-sd15.json", {"main_model_loader": ("model", "tiny-sd1")}),
    ("text-to-image-sdxl.json", {"sdxl_model_loader": ("model", "tiny-sdxl"), "vae_loader": ("vae_model", "tiny-sdxl-vae")}),
])
def test_invokeai_workflows_run_unchanged_with_tiny_models(model_run, tiny_registry, name, models):
    """InvokeAI's own exported workflows, bound to the tiny models and shrunk to 64 px and 2 steps."""
    from invokeai_provider.graph.workflow import load_document

    document = load_document((SHARED_WORKFLOWS / name).read_text())
    graph_dict = document.graph.to_dict()
    for node in graph_dict["nodes"].values():
        if node["type"] in models:
            field, model = models[node["type"]]
            node[field] = model
        if node["type"] == "noise":
            node.update(width=64, height=64)
        if node["type"] == "denoise_latents":
            node["steps"] = 2
    model_run.workflow_json = document.workflow.raw
    bound = bind_model_fields(graph_dict, tiny_registry)
    model_run.graph_json = bound
    state = run_graph(Graph.from_dict(bound), model_run)
    [image] = [o for outputs in state.leaf_outputs().values() for o in outputs if o["type"] == "image_output"]
    assert (image["width"], image["height"]) == (64, 64)
    info = Image.open(io.BytesIO(model_run.store.read("images", image["image"]["image_name"]))).info
    assert json.loads(info["invokeai_workflow"])["name"] == document.workflow.name


@pytest.mark.parametrize("model, width, height, expected", [
    ("tiny-sd1", 1024, 576, (680, 384)),
    ("tiny-sd1", 512, 768, (416, 624)),
    ("tiny-sdxl", 1024, 576, (1360, 768)),
    ("tiny-sdxl", 1024, 1024, (1024, 1024)),
])
def test_ideal_size_follows_the_model_base(model_run, tiny_registry, model, width, height, expected):
    loader = "main_model_loader" if model == "tiny-sd1" else "sdxl_model_loader"
    doc = {"id": "i", "nodes": {"m": {"id": "m", "type": loader, "model": model},
                                "size": {"id": "size", "type": "ideal_size", "width": width, "height": height}},
           "edges": [edge("m", "unet", "size", "unet")]}
    [out] = run(doc, model_run, tiny_registry).outputs_of("size")
    assert (out.width, out.height) == expected


def test_gradient_mask_fades_the_edge_and_inpaints_inside(model_run, tiny_registry):
    mask = Image.new("L", (128, 128), 255)
    mask.paste(0, (48, 48, 80, 80))  # black square in the middle: repaint
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    model_run.store.write("images", "m.png", buffer.getvalue())
    source = run(sd1_graph(seed=3, size=128), model_run, tiny_registry)
    image_name = source.outputs_of("decode")[0].image.image_name
    doc = sd1_graph(seed=5, size=128, extra_nodes={
        "encode": {"type": "i2l", "image": {"image_name": image_name}},
        "mask": {"type": "create_gradient_mask", "mask": {"image_name": "m.png"}, "edge_radius": 16,
                 "minimum_denoise": 0.2},
    }, extra_edges=[edge("encode", "latents", "denoise", "latents"), edge("model", "vae", "encode", "vae"),
                    edge("mask", "denoise_mask", "denoise", "denoise_mask")])
    state = run(doc, model_run, tiny_registry)
    [mask_out] = state.outputs_of("mask")
    assert mask_out.denoise_mask.gradient is True
    gradient = latents_of(model_run, mask_out.denoise_mask.mask_name)[0, 0]
    assert gradient.shape == (128, 128)
    assert gradient[64, 64] == 0 and gradient[0, 0] == 1  # repaint inside, keep far outside
    ring = gradient[32:40, 64]  # outside the square (and its blended border row), within the 16 px edge
    assert torch.allclose(ring, torch.full_like(ring, 0.8), atol=1 / 255)  # held at the minimum-denoise level
    expanded = pixels(model_run.store.read("images", mask_out.expanded_mask_area.image_name))
    assert expanded[64, 64, 0] == 0 and expanded[40, 64, 0] == 0 and expanded[0, 0, 0] == 255
    encoded = latents_of(model_run, state.outputs_of("encode")[0].latents.latents_name)
    result = latents_of(model_run, state.outputs_of("denoise")[0].latents.latents_name)
    assert torch.equal(result[..., 0, 0], encoded[..., 0, 0])  # a kept corner is untouched
    assert not torch.allclose(result[..., 8, 8], encoded[..., 8, 8])  # the centre was repainted


def lora_graph(weight: float) -> dict:
    """sd1_graph with main_model_loader → lora_loader feeding the prompts and the denoiser."""
    doc = sd1_graph(extra_nodes={"lora": {"type": "lora_loader", "lora": "tiny-lora", "weight": weight}})
    doc["edges"] = [e for e in doc["edges"] if not (e["source"]["node_id"] == "model" and
                                                    e["source"]["field"] in ("unet", "clip"))]
    doc["edges"] += [edge("model", "unet", "lora", "unet"), edge("model", "clip", "lora", "clip"),
                     edge("lora", "unet", "denoise", "unet"), edge("lora", "clip", "pos", "clip"),
                     edge("lora", "clip", "neg", "clip")]
    return doc


def test_a_lora_changes_the_image_and_leaves_cached_weights_alone(model_run, tiny_registry, model_manager):
    plain = png_of(model_run, run(sd1_graph(), model_run, tiny_registry))
    unet_key = model_manager.cache_key(tiny_registry.find("tiny-sd1"), SubModelType.UNet)
    before = {k: v.clone() for k, v in model_manager.cache.get(unet_key, lambda: None).state_dict().items()}
    with_lora = png_of(model_run, run(lora_graph(1.0), model_run, tiny_registry))
    assert np.abs(pixels(plain) - pixels(with_lora)).mean() > 0.5
    after = model_manager.cache.get(unet_key, lambda: None).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert png_of(model_run, run(sd1_graph(), model_run, tiny_registry)) == plain  # nothing baked in
    assert png_of(model_run, run(lora_graph(0.0), model_run, tiny_registry)) == plain


def test_an_embedding_trigger_changes_the_conditioning(model_run, tiny_registry):
    def conditioning(prompt: str) -> torch.Tensor:
        doc = {"id": "c", "nodes": {"m": {"id": "m", "type": "main_model_loader", "model": "tiny-sd1"},
                                    "p": {"id": "p", "type": "compel", "prompt": prompt}},
               "edges": [edge("m", "clip", "p", "clip")]}
        name = run(doc, model_run, tiny_registry).outputs_of("p")[0].conditioning.conditioning_name
        from safetensors.torch import load

        return load(model_run.store.read("conditioning", name + ".safetensors"))["embeds"]

    plain = conditioning("a photo of a cat")
    with_embedding = conditioning("a photo of a <tiny-embedding> cat")
    unknown = conditioning("a photo of a <not-installed> cat")
    assert with_embedding.shape == plain.shape
    assert not torch.allclose(with_embedding, plain)
    assert not torch.allclose(unknown, with_embedding)
    assert torch.equal(conditioning("a photo of a cat"), plain)  # the tokenizer and encoder were restored


def seamless_graph(axes: dict) -> dict:
    doc = sd1_graph(seed=9, extra_nodes={"tile": {"type": "seamless", **axes}})
    doc["edges"] = [e for e in doc["edges"] if not (e["source"]["node_id"] == "model" and
                                                    e["source"]["field"] in ("unet", "vae"))]
    doc["edges"] += [edge("model", "unet", "tile", "unet"), edge("model", "vae", "tile", "vae"),
                     edge("tile", "unet", "denoise", "unet"), edge("tile", "vae", "decode", "vae")]
    return doc


def test_seamless_changes_the_image_and_patches_only_for_the_node(model_run, tiny_registry, model_manager):
    plain = png_of(model_run, run(sd1_graph(seed=9), model_run, tiny_registry))
    tiled = png_of(model_run, run(seamless_graph({"seamless_x": True, "seamless_y": True}), model_run, tiny_registry))
    assert np.abs(pixels(plain) - pixels(tiled)).mean() > 0.5
    assert png_of(model_run, run(sd1_graph(seed=9), model_run, tiny_registry)) == plain  # convs restored


def test_freeu_changes_the_image_and_is_switched_off_afterwards(model_run, tiny_registry):
    plain = png_of(model_run, run(sd1_graph(seed=9), model_run, tiny_registry))
    doc = sd1_graph(seed=9, extra_nodes={"freeu": {"type": "freeu", "b1": 1.5, "b2": 1.6, "s1": 0.5, "s2": 0.2}})
    doc["edges"] = [e for e in doc["edges"] if not (e["source"]["node_id"] == "model" and
                                                    e["destination"]["node_id"] == "denoise")]
    doc["edges"] += [edge("model", "unet", "freeu", "unet"), edge("freeu", "unet", "denoise", "unet")]
    with_freeu = png_of(model_run, run(doc, model_run, tiny_registry))
    assert np.abs(pixels(plain) - pixels(with_freeu)).mean() > 0.5
    assert png_of(model_run, run(sd1_graph(seed=9), model_run, tiny_registry)) == plain


def test_save_image_stores_a_copy_with_its_own_metadata(model_run, tiny_registry):
    doc = sd1_graph(extra_nodes={"save": {"type": "save_image"}, "meta": {"type": "metadata_item", "label": "k",
                                                                          "value": "v"},
                                 "md": {"type": "metadata"}},
                    extra_edges=[edge("decode", "image", "save", "image"), edge("meta", "item", "md", "items"),
                                 edge("md", "metadata", "save", "metadata")])
    state = run(doc, model_run, tiny_registry)
    original, copy = state.outputs_of("decode")[0].image.image_name, state.outputs_of("save")[0].image.image_name
    assert original != copy
    assert (pixels(model_run.store.read("images", original)) == pixels(model_run.store.read("images", copy))).all()
    info = Image.open(io.BytesIO(model_run.store.read("images", copy))).info
    assert json.loads(info["invokeai_metadata"])["k"] == "v"
