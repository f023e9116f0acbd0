"""The graphs InvokeAI's web UI builds for SD3.5, CogView4, Z-Image, FLUX.2 Klein and FLUX.2 [dev] (buildSD3Graph,
buildCogView4Graph, buildZImageGraph, buildFLUXGraph's Klein and [dev] paths with addTextToImage / addImageToImage /
addInpaint / addOutpaint, the LoRA collections (addFlux2DevLoRAs for [dev]), Z-Image control, regional prompts,
FLUX.2 reference images) run here unchanged: posted as the UI's enqueue_batch body (seed and prompts filled from the
batch data), expanded and run in the engine with the tiny models. Their shape is rebuilt by tests/ui_graphs.py.

Text to image, the LoRA collection and the FLUX.2 reference-image collect chain must give exactly the image of the
plain graph with the same settings (the UI's string/integer/collect/metadata nodes change nothing); the canvas
modes must make an image of the canvas size, record the UI's metadata, and (inpaint, outpaint) paste the picture back
outside the mask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest

from helpers import block_picture, edge, graph, node, put_image
from ui_graphs import (Canvas, Region, UiGraph, add_image_to_image, add_inpaint, add_lora_collection, add_outpaint,
                       add_regions, add_text_to_image, enqueue_batch)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, STEPS = 32, 2
CANVAS = 64  # the canvas modes' size
PROMPT = "a red lighthouse on a cliff, watercolor"
CANVAS_METADATA = {"canvas_v2_metadata": {"controlLayers": [], "inpaintMasks": [], "rasterLayers": [],
                                          "regionalGuidance": []}}
STRENGTH_EXPONENT = {"sd-3": 0.2, "flux2": 0.2, "flux2-dev": 0.2, "cogview4": 1.0, "z-image": 1.0}
DEV_GUIDANCE = 2.5  # FLUX.2 [dev]'s guidance (not flux2_denoise's default 4, so a dropped field would show)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model root with the tiny SD3.5, CogView4, Z-Image (with LoRA and ControlNet), FLUX.2 Klein (with LoRA) and
    FLUX.2 [dev] (base key "flux2-dev") models; their identifiers by (kind, base)."""
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_install import install_tiny

    registry = ModelRegistry(tmp_path_factory.mktemp("ui-graph-models").as_uri())
    wanted = [("main", "sd-3"), ("main", "cogview4"), ("main", "z-image"), ("lora", "z-image"),
              ("controlnet", "z-image"), ("main", "flux2"), ("lora", "flux2")]
    ids = {key: install_tiny(registry, *key).config.identifier() for key in wanted}
    ids["main", "flux2-dev"] = install_tiny(registry, "main", "flux2", variant="dev").config.identifier()
    # the tiny FLUX.2 LoRA patches no context input, so it records no variant and fits the [dev] transformer too
    # (whose patched layers have Klein's shapes: only the context embedder is wider)
    ids["lora", "flux2-dev"] = ids["lora", "flux2"]
    return {"manager": ModelManager(registry, device="cpu"), "uri": registry.location, **ids}


@pytest.fixture
def run_context(tmp_path: Path, models: dict[str, Any]):
    from invokeai_provider.core.context import RunContext
    from invokeai_provider.storage.base import LocalArtifactBackend, RunStore

    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="ui", run_id="r1"),
                      services={"models": models["manager"]})


@pytest.fixture
def canvas(run_context) -> Canvas:
    """A 64-pixel canvas (room for the UI's default 16-pixel coherence edge and mask fade): a block picture, an
    inpaint mask that repaints a centre square (black), a picture with a transparent right third for outpainting."""
    picture = block_picture(5, cell=CANVAS // 4)
    mask = np.full((CANVAS, CANVAS), 255, np.uint8)
    mask[28:36, 28:36] = 0
    put_image(run_context, "canvas-picture.png", picture)
    put_image(run_context, "canvas-mask.png", mask, mode="L")
    rgba = np.concatenate([picture, np.full((CANVAS, CANVAS, 1), 255, np.uint8)], axis=2)
    rgba[:, 44:, 3] = 0
    put_image(run_context, "canvas-transparent.png", rgba, mode="RGBA")
    put_image(run_context, "canvas-no-mask.png", np.full((CANVAS, CANVAS), 255, np.uint8), mode="L")
    return Canvas(picture="canvas-picture.png", mask="canvas-mask.png", size=(SIZE, SIZE))


# --- running a UI batch ----------------------------------------------------------------------------------------------


def run_batch(body: dict[str, Any], run_context) -> list[tuple[Any, dict[str, Any]]]:
    """Loads the enqueue_batch body as a client's document, expands it into sessions and runs each in the engine;
    returns each session's canvas output image (an RGB array) and the metadata written into its PNG."""
    from invokeai_provider.graph.batch import expand_batch
    from invokeai_provider.graph.engine import run_graph
    from invokeai_provider.graph.workflow import load_document

    from helpers import stored_image

    document = load_document(json.dumps(body))
    sessions, _ = expand_batch(document.graph, document.batch)
    results = []
    for session in sessions:
        [output_id] = [nid for nid in session.to_dict()["nodes"] if nid.startswith("canvas_output:")]
        [output] = run_graph(session, run_context).outputs_of(output_id)
        image = stored_image(run_context, output)
        results.append((np.asarray(image.convert("RGB")), json.loads(image.info["invokeai_metadata"])))
    return results


def run_plain(document: dict[str, Any], run_context, output: str = "decode") -> np.ndarray:
    from invokeai_provider.graph.engine import run_graph
    from invokeai_provider.graph.graph import Graph

    from helpers import stored_image

    [out] = run_graph(Graph.from_dict(document), run_context).outputs_of(output)
    return np.asarray(stored_image(run_context, out).convert("RGB"))


def finish(g: UiGraph, mode: str, base: str, canvas: Canvas, denoise: str, l2i: str, i2l_type: str,
           vae_source: str, seed: str, generation_prefix: str) -> str:
    """The generation-mode dispatch every builder shares; returns the output node (renamed canvas_output)."""
    start = 1 - canvas.strength ** STRENGTH_EXPONENT[base]  # getDenoisingStartAndEnd
    if mode == "txt2img":
        output = add_text_to_image(g, canvas, denoise, l2i)
    else:
        i2l = g.add(i2l_type)
        if mode == "img2img":
            output = add_image_to_image(g, canvas, denoise, l2i, i2l, vae_source, start)
        elif mode == "inpaint":
            output = add_inpaint(g, canvas, denoise, l2i, i2l, vae_source, seed, start)
        else:
            output = add_outpaint(g, canvas, denoise, l2i, i2l, vae_source, start)
    g.metadata(generation_mode=f"{generation_prefix}_{mode}")
    on_canvas = mode != "txt2img"
    if on_canvas:
        g.metadata(**CANVAS_METADATA)
    return g.finish(output, canvas=on_canvas)


# --- the four builders -----------------------------------------------------------------------------------------------


def sd3_ui(models: dict[str, Any], mode: str, canvas: Canvas, cfg: float = 3.5) -> tuple[UiGraph, dict[str, str]]:
    """buildSD3Graph: the separate-part selectors are null (none chosen), a string node per prompt, an integer seed."""
    g = UiGraph("sd3_graph", seed=31)
    loader = g.add("sd3_model_loader", model=models["main", "sd-3"], t5_encoder_model=None, clip_l_model=None,
                   clip_g_model=None, vae_model=None)
    positive, negative = g.add("string", "positive_prompt"), g.add("string", "negative_prompt")
    pos, neg = g.add("sd3_text_encoder", "pos_cond"), g.add("sd3_text_encoder", "neg_cond")
    seed = g.add("integer", "seed")
    denoise = g.add("sd3_denoise", cfg_scale=cfg, steps=STEPS, denoising_start=0, denoising_end=1)
    l2i = g.add("sd3_l2i", "l2i")
    g.edge(loader, "transformer", denoise, "transformer")
    for field in ("clip_l", "clip_g", "t5_encoder"):
        g.edge(loader, field, pos, field)
        g.edge(loader, field, neg, field)
    g.edge(loader, "vae", l2i, "vae")
    g.edge(positive, "value", pos, "prompt")
    g.edge(negative, "value", neg, "prompt")
    g.edge(pos, "conditioning", denoise, "positive_conditioning")
    g.edge(neg, "conditioning", denoise, "negative_conditioning")
    g.edge(seed, "value", denoise, "seed")
    g.edge(denoise, "latents", l2i, "latents")
    g.metadata(cfg_scale=cfg, model=models["main", "sd-3"], steps=STEPS)
    g.edge_to_metadata(seed, "value", "seed")
    g.edge_to_metadata(positive, "value", "positive_prompt")
    g.edge_to_metadata(negative, "value", "negative_prompt")
    output = finish(g, mode, "sd-3", canvas, denoise, l2i, "sd3_i2l", loader, seed, "sd3")
    return g, {"output": output, "seed": seed, "positive": positive, "negative": negative}


def cogview4_ui(models: dict[str, Any], mode: str, canvas: Canvas, cfg: float = 3.5,
                negative: str = "") -> tuple[UiGraph, dict[str, str]]:
    """buildCogView4Graph: the negative prompt is a literal on its encoder, only the positive comes from a string."""
    g = UiGraph("cogview4_graph", seed=41)
    loader = g.add("cogview4_model_loader", model=models["main", "cogview4"])
    positive = g.add("string", "positive_prompt")
    pos = g.add("cogview4_text_encoder", "pos_prompt")
    neg = g.add("cogview4_text_encoder", "neg_prompt", prompt=negative)
    seed = g.add("integer", "seed")
    denoise = g.add("cogview4_denoise", "denoise_latents", cfg_scale=cfg, steps=STEPS)
    l2i = g.add("cogview4_l2i", "l2i")
    g.edge(loader, "transformer", denoise, "transformer")
    g.edge(loader, "glm_encoder", pos, "glm_encoder")
    g.edge(loader, "glm_encoder", neg, "glm_encoder")
    g.edge(loader, "vae", l2i, "vae")
    g.edge(positive, "value", pos, "prompt")
    g.edge(pos, "conditioning", denoise, "positive_conditioning")
    g.edge(neg, "conditioning", denoise, "negative_conditioning")
    g.edge(seed, "value", denoise, "seed")
    g.edge(denoise, "latents", l2i, "latents")
    g.metadata(cfg_scale=cfg, negative_prompt=negative, model=models["main", "cogview4"], steps=STEPS)
    g.edge_to_metadata(seed, "value", "seed")
    g.edge_to_metadata(positive, "value", "positive_prompt")
    output = finish(g, mode, "cogview4", canvas, denoise, l2i, "cogview4_i2l", loader, seed, "cogview4")
    return g, {"output": output, "seed": seed, "positive": positive}


def z_image_ui(models: dict[str, Any], mode: str, canvas: Canvas, guidance: float = 1.0, negative: str = "",
               loras: Optional[list[tuple[str, float]]] = None, control: Optional[str] = None,
               seed_variance: Optional[tuple[float, float]] = None) -> tuple[UiGraph, dict[str, str]]:
    """buildZImageGraph: conditionings through collects (regions add to them), a negative encoder only when
    guidance > 1, the VAE into the denoise (for control), LoRAs through z_image_lora_collection_loader, one
    z_image_control, optionally the seed variance enhancer."""
    g = UiGraph("z_image_graph", seed=51)
    loader = g.add("z_image_model_loader", model=models["main", "z-image"])
    positive = g.add("string", "positive_prompt")
    pos = g.add("z_image_text_encoder", "pos_prompt")
    pos_collect = g.add("collect", "pos_cond_collect")
    neg = neg_collect = None
    if guidance > 1:
        neg = g.add("z_image_text_encoder", "neg_prompt", prompt=negative)
        neg_collect = g.add("collect", "neg_cond_collect")
    seed = g.add("integer", "seed")
    denoise = g.add("z_image_denoise", "denoise_latents", guidance_scale=guidance, steps=STEPS, scheduler="euler")
    l2i = g.add("z_image_l2i", "l2i")
    g.edge(loader, "transformer", denoise, "transformer")
    g.edge(loader, "qwen3_encoder", pos, "qwen3_encoder")
    g.edge(loader, "vae", l2i, "vae")
    g.edge(loader, "vae", denoise, "vae")
    g.edge(positive, "value", pos, "prompt")
    if seed_variance:
        enhancer = g.add("z_image_seed_variance_enhancer", "seed_variance_enhancer", strength=seed_variance[0],
                         randomize_percent=seed_variance[1])
        g.edge(seed, "value", enhancer, "seed")
        g.edge(pos, "conditioning", enhancer, "conditioning")
        g.edge(enhancer, "conditioning", pos_collect, "item")
    else:
        g.edge(pos, "conditioning", pos_collect, "item")
    g.edge(pos_collect, "collection", denoise, "positive_conditioning")
    if neg is not None:
        g.edge(loader, "qwen3_encoder", neg, "qwen3_encoder")
        g.edge(neg, "conditioning", neg_collect, "item")
        g.edge(neg_collect, "collection", denoise, "negative_conditioning")
    g.edge(seed, "value", denoise, "seed")
    g.edge(denoise, "latents", l2i, "latents")
    if loras:
        add_lora_collection(g, "z_image_lora_collection_loader", [(models[kind, "z-image"], w) for kind, w in loras],
                            loader, denoise, "qwen3_encoder", [pos] + ([neg] if neg else []))
    if control:
        layer = g.add("z_image_control", node_id="z_image_control_control_layer:Ab3dE5gH7j",
                      control_model=models["controlnet", "z-image"], control_context_scale=0.75,
                      begin_step_percent=0, end_step_percent=1, image={"image_name": control})
        g.edge(layer, "control", denoise, "control")
    if canvas.regions:
        add_regions(g, canvas, "z_image_text_encoder", ["qwen3_encoder", "mask"], pos, pos_collect, neg, neg_collect)
    g.metadata(cfg_scale=guidance, negative_prompt=negative, model=models["main", "z-image"], steps=STEPS,
               scheduler="euler", z_image_seed_variance_enabled=bool(seed_variance),
               z_image_seed_variance_strength=(seed_variance or (0.1, 50))[0],
               z_image_seed_variance_randomize_percent=(seed_variance or (0.1, 50))[1], z_image_shift="auto")
    g.edge_to_metadata(seed, "value", "seed")
    g.edge_to_metadata(positive, "value", "positive_prompt")
    output = finish(g, mode, "z-image", canvas, denoise, l2i, "z_image_i2l", loader, seed, "z_image")
    return g, {"output": output, "seed": seed, "positive": positive}


def flux2_core(g: UiGraph, model: dict[str, Any], loader_type: str, encoder_type: str, encoder_field: str,
               **denoise: Any) -> tuple[str, ...]:
    """buildFLUXGraph's FLUX.2 text-to-image core, shared by Klein and [dev]: prompt and seed primitives, the loader
    (its encoder and max_seq_len into the prompt node), the prompt through a collect into flux2_denoise (``denoise``:
    extra fields, also recorded in the metadata), the decode. Returns (positive, seed, l2i, loader, pos, denoise,
    pos_collect) ids."""
    positive = g.add("string", "positive_prompt")
    seed = g.add("integer", "seed")
    l2i = g.add("flux2_vae_decode")
    loader = g.add(loader_type, model=model)
    pos = g.add(encoder_type)
    node = g.add("flux2_denoise", **denoise, num_steps=STEPS, scheduler="euler")
    pos_collect = g.add("collect", "pos_cond_collect")
    g.edge(loader, encoder_field, pos, encoder_field)
    g.edge(loader, "max_seq_len", pos, "max_seq_len")
    g.edge(loader, "transformer", node, "transformer")
    g.edge(loader, "vae", node, "vae")
    g.edge(loader, "vae", l2i, "vae")
    g.edge(positive, "value", pos, "prompt")
    g.edge(pos, "conditioning", pos_collect, "item")
    g.edge(pos_collect, "collection", node, "positive_text_conditioning")
    g.edge(seed, "value", node, "seed")
    g.edge(node, "latents", l2i, "latents")
    g.metadata(model=model, steps=STEPS, scheduler="euler", **denoise)
    g.edge_to_metadata(seed, "value", "seed")
    g.edge_to_metadata(positive, "value", "positive_prompt")
    return positive, seed, l2i, loader, pos, node, pos_collect


def flux2_ui(models: dict[str, Any], mode: str, canvas: Canvas, loras: Optional[list[float]] = None,
             references: Optional[list[str]] = None) -> tuple[UiGraph, dict[str, str]]:
    """buildFLUXGraph's FLUX.2 Klein path: flux2_klein_model_loader (max_seq_len into the encoder), the conditioning
    through a collect, the VAE into flux2_denoise, LoRAs through flux2_klein_lora_collection_loader, reference images
    as flux_kontext nodes in a chain of collects, regions (positive prompts only)."""
    g = UiGraph("flux_graph", seed=61)
    positive, seed, l2i, loader, pos, denoise, pos_collect = flux2_core(
        g, models["main", "flux2"], "flux2_klein_model_loader", "flux2_klein_text_encoder", "qwen3_encoder")
    if loras:
        add_lora_collection(g, "flux2_klein_lora_collection_loader", [(models["lora", "flux2"], w) for w in loras],
                            loader, denoise, "qwen3_encoder", [pos])
    if references:
        previous = None
        for name in references:
            kontext = g.add("flux_kontext", image={"image_name": name})
            collect = g.add("collect", "flux2_kontext_collect")
            g.edge(kontext, "kontext_cond", collect, "item")
            if previous is not None:
                g.edge(previous, "collection", collect, "collection")
            previous = collect
        g.edge(previous, "collection", denoise, "kontext_conditioning")
        g.metadata(ref_images=[{"id": f"reference_image:{i}", "isEnabled": True,
                                "config": {"type": "flux2_reference_image", "image": {"original": {
                                    "image": {"image_name": name, "width": SIZE, "height": SIZE}}}}}
                               for i, name in enumerate(references)])
    output = finish(g, mode, "flux2", canvas, denoise, l2i, "flux2_vae_encode", loader, seed, "flux2")
    if canvas.regions:
        add_regions(g, canvas, "flux2_klein_text_encoder", ["qwen3_encoder", "max_seq_len", "mask"], pos, pos_collect)
    return g, {"output": output, "seed": seed, "positive": positive}


def flux2_dev_ui(models: dict[str, Any], mode: str, canvas: Canvas, loras: Optional[list[float]] = None,
                 guidance: float = DEV_GUIDANCE) -> tuple[UiGraph, dict[str, str]]:
    """buildFLUXGraph's FLUX.2 [dev] path: flux2_dev_model_loader (no part selectors: they are undefined, so
    absent; max_seq_len into the encoder), flux2_dev_text_encoder through a collect, flux2_denoise with the guidance,
    the VAE into the denoise, LoRAs through flux2_dev_lora_collection_loader (addFlux2DevLoRAs), the guidance in the
    metadata; the generation modes are Klein's (flux2_* metadata)."""
    g = UiGraph("flux_graph", seed=71)
    positive, seed, l2i, loader, pos, denoise, pos_collect = flux2_core(
        g, models["main", "flux2-dev"], "flux2_dev_model_loader", "flux2_dev_text_encoder", "mistral_encoder",
        guidance=guidance)
    if loras:
        add_lora_collection(g, "flux2_dev_lora_collection_loader", [(models["lora", "flux2-dev"], w) for w in loras],
                            loader, denoise, "mistral_encoder", [pos])
    output = finish(g, mode, "flux2-dev", canvas, denoise, l2i, "flux2_vae_encode", loader, seed, "flux2")
    return g, {"output": output, "seed": seed, "positive": positive}


# --- the plain graphs the UI's text-to-image must equal ----------------------------------------------------------


def sd3_plain(models: dict[str, Any], seed: int, cfg: float = 3.5) -> dict[str, Any]:
    return graph(
        node("load", "sd3_model_loader", model=models["main", "sd-3"]),
        node("pos", "sd3_text_encoder", prompt=PROMPT), node("neg", "sd3_text_encoder", prompt=""),
        node("denoise", "sd3_denoise", seed=seed, steps=STEPS, cfg_scale=cfg, width=SIZE, height=SIZE),
        node("decode", "sd3_l2i"),
        edges=[*(edge("load", f, e, f) for f in ("clip_l", "clip_g", "t5_encoder") for e in ("pos", "neg")),
               edge("load", "transformer", "denoise", "transformer"),
               edge("pos", "conditioning", "denoise", "positive_conditioning"),
               edge("neg", "conditioning", "denoise", "negative_conditioning"),
               edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")])


def cogview4_plain(models: dict[str, Any], seed: int, cfg: float = 3.5) -> dict[str, Any]:
    return graph(
        node("load", "cogview4_model_loader", model=models["main", "cogview4"]),
        node("pos", "cogview4_text_encoder", prompt=PROMPT), node("neg", "cogview4_text_encoder", prompt=""),
        node("denoise", "cogview4_denoise", seed=seed, steps=STEPS, cfg_scale=cfg, width=SIZE, height=SIZE),
        node("decode", "cogview4_l2i"),
        edges=[edge("load", "glm_encoder", "pos", "glm_encoder"), edge("load", "glm_encoder", "neg", "glm_encoder"),
               edge("load", "transformer", "denoise", "transformer"),
               edge("pos", "conditioning", "denoise", "positive_conditioning"),
               edge("neg", "conditioning", "denoise", "negative_conditioning"),
               edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")])


def z_image_plain(models: dict[str, Any], seed: int, lora: Optional[float] = None) -> dict[str, Any]:
    """Z-Image text to image with the conditioning edged straight in; ``lora``: through z_image_lora_loader."""
    nodes = [node("load", "z_image_model_loader", model=models["main", "z-image"]),
             node("pos", "z_image_text_encoder", prompt=PROMPT),
             node("denoise", "z_image_denoise", seed=seed, steps=STEPS, width=SIZE, height=SIZE, guidance_scale=1.0),
             node("decode", "z_image_l2i")]
    parts = "load"
    edges = [edge("pos", "conditioning", "denoise", "positive_conditioning"),
             edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")]
    if lora is not None:
        nodes.append(node("lora", "z_image_lora_loader", lora=models["lora", "z-image"], weight=lora))
        edges += [edge("load", "transformer", "lora", "transformer"),
                  edge("load", "qwen3_encoder", "lora", "qwen3_encoder")]
        parts = "lora"
    edges += [edge(parts, "transformer", "denoise", "transformer"), edge(parts, "qwen3_encoder", "pos", "qwen3_encoder")]
    return graph(*nodes, edges=edges)


def flux2_plain(models: dict[str, Any], seed: int, lora: Optional[float] = None,
                references: Optional[list[str]] = None) -> dict[str, Any]:
    """Klein text to image with the conditioning edged straight in; ``lora``: through flux2_klein_lora_loader;
    ``references``: kontext_conditioning as a literal list."""
    kontext = [{"image": {"image_name": name}} for name in references] if references else None
    nodes = [node("load", "flux2_klein_model_loader", model=models["main", "flux2"]),
             node("pos", "flux2_klein_text_encoder", prompt=PROMPT),
             node("denoise", "flux2_denoise", seed=seed, num_steps=STEPS, width=SIZE, height=SIZE,
                  **({"kontext_conditioning": kontext} if kontext else {})),
             node("decode", "flux2_vae_decode")]
    parts = "load"
    edges = [edge("pos", "conditioning", "denoise", "positive_text_conditioning"),
             edge("load", "max_seq_len", "pos", "max_seq_len"), edge("load", "vae", "denoise", "vae"),
             edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")]
    if lora is not None:
        nodes.append(node("lora", "flux2_klein_lora_loader", lora=models["lora", "flux2"], weight=lora))
        edges += [edge("load", "transformer", "lora", "transformer"),
                  edge("load", "qwen3_encoder", "lora", "qwen3_encoder")]
        parts = "lora"
    edges += [edge(parts, "transformer", "denoise", "transformer"), edge(parts, "qwen3_encoder", "pos", "qwen3_encoder")]
    return graph(*nodes, edges=edges)


def flux2_dev_plain(models: dict[str, Any], seed: int, lora: Optional[float] = None,
                    guidance: float = DEV_GUIDANCE) -> dict[str, Any]:
    """[dev] text to image with the conditioning edged straight in; ``lora``: through flux2_dev_lora_loader."""
    nodes = [node("load", "flux2_dev_model_loader", model=models["main", "flux2-dev"]),
             node("pos", "flux2_dev_text_encoder", prompt=PROMPT),
             node("denoise", "flux2_denoise", seed=seed, num_steps=STEPS, width=SIZE, height=SIZE, guidance=guidance),
             node("decode", "flux2_vae_decode")]
    parts = "load"
    edges = [edge("pos", "conditioning", "denoise", "positive_text_conditioning"),
             edge("load", "max_seq_len", "pos", "max_seq_len"), edge("load", "vae", "denoise", "vae"),
             edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")]
    if lora is not None:
        nodes.append(node("lora", "flux2_dev_lora_loader", lora=models["lora", "flux2-dev"], weight=lora))
        edges += [edge("load", "transformer", "lora", "transformer"),
                  edge("load", "mistral_encoder", "lora", "mistral_encoder")]
        parts = "lora"
    edges += [edge(parts, "transformer", "denoise", "transformer"),
              edge(parts, "mistral_encoder", "pos", "mistral_encoder")]
    return graph(*nodes, edges=edges)


BUILDERS: dict[str, Callable[..., tuple[UiGraph, dict[str, str]]]] = {
    "sd-3": sd3_ui, "cogview4": cogview4_ui, "z-image": z_image_ui, "flux2": flux2_ui, "flux2-dev": flux2_dev_ui}
PLAIN = {"sd-3": sd3_plain, "cogview4": cogview4_plain, "z-image": z_image_plain, "flux2": flux2_plain,
         "flux2-dev": flux2_dev_plain}
PREFIX = {"sd-3": "sd3", "cogview4": "cogview4", "z-image": "z_image", "flux2": "flux2", "flux2-dev": "flux2"}


def changed(image: np.ndarray, other: np.ndarray) -> bool:
    """Whether two images differ at all: the engine is deterministic (the equality tests show the same graph gives
    the same pixels), and the tiny random-weight models move only a few levels for a prompt or a LoRA."""
    return not np.array_equal(image, other)


def batch_of(g: UiGraph, ids: dict[str, str], seeds: list[int], prompts: list[str] = [PROMPT]) -> dict[str, Any]:
    return enqueue_batch(g, ids["positive"], prompts, ids["seed"], seeds, ids.get("negative"))


# --- tests -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", sorted(BUILDERS))
def test_the_ui_text_to_image_batch_gives_the_plain_graphs_images_per_seed(base: str, models: dict[str, Any],
                                                                           canvas: Canvas, run_context) -> None:
    """Two seeds in the batch data: two sessions, each the plain graph's image for its seed (exactly), each PNG
    carrying the UI's metadata with the seed and prompt that came by edges from the batch-filled nodes."""
    g, ids = BUILDERS[base](models, "txt2img", canvas)
    results = run_batch(batch_of(g, ids, [5, 9]), run_context)
    assert len(results) == 2
    for (image, metadata), seed in zip(results, (5, 9)):
        assert image.shape == (SIZE, SIZE, 3)
        assert np.array_equal(image, run_plain(PLAIN[base](models, seed), run_context))
        assert {k: metadata[k] for k in ("generation_mode", "seed", "positive_prompt", "steps", "width", "height")} \
            == {"generation_mode": f"{PREFIX[base]}_txt2img", "seed": seed, "positive_prompt": PROMPT,
                "steps": STEPS, "width": SIZE, "height": SIZE}
        assert metadata["model"]["key"] == models["main", base]["key"]
        if base == "flux2-dev":
            assert metadata["guidance"] == DEV_GUIDANCE
    assert not np.array_equal(results[0][0], results[1][0])


# [dev]: image to image only (its canvas wiring is Klein's, buildFLUXGraph's shared addFlux2Features; its inpaint and
# outpaint passed when run once, left out to keep the module fast)
CANVAS_CASES = [(base, mode) for base in sorted(BUILDERS) for mode in ("img2img", "inpaint", "outpaint")
                if base != "flux2-dev" or mode == "img2img"]


@pytest.mark.parametrize("base,mode", CANVAS_CASES)
def test_the_ui_canvas_graphs_run(base: str, mode: str, models: dict[str, Any], canvas: Canvas,
                                  run_context) -> None:
    """Image to image, inpaint and outpaint as the canvas builds them (unscaled, tile infill): an image of the canvas
    size with the canvas metadata; inpaint and outpaint repaint their area and paste the picture back beyond the
    coherence edge and the fade (inpaint: an 8-pixel edge and fade, as the UI's 16 would reach a 64-pixel canvas's
    border)."""
    canvas.size = (CANVAS, CANVAS)
    if mode == "outpaint":
        canvas.picture, canvas.mask = "canvas-transparent.png", "canvas-no-mask.png"
    else:
        canvas.coherence["edge_radius"], canvas.mask_blur = 8, 8
    g, ids = BUILDERS[base](models, mode, canvas)
    [(image, metadata)] = run_batch(batch_of(g, ids, [3]), run_context)
    assert image.shape == (CANVAS, CANVAS, 3) and len(np.unique(image.reshape(-1, 3), axis=0)) > 1
    assert metadata["generation_mode"] == f"{PREFIX[base]}_{mode}" and "canvas_v2_metadata" in metadata
    picture = block_picture(5, cell=CANVAS // 4).astype(int)
    if mode == "inpaint":  # repainted: the centre square; kept: an 8-pixel frame
        assert np.abs(image[28:36, 28:36].astype(int) - picture[28:36, 28:36]).max() > 8
        frame = np.ones((CANVAS, CANVAS), bool)
        frame[8:56, 8:56] = False
        assert np.abs(image[frame].astype(int) - picture[frame]).max() <= 1
    elif mode == "outpaint":  # generated: the transparent right part; kept: the far left columns
        assert np.abs(image[:, 48:].astype(int) - picture[:, 48:]).max() > 8
        assert np.abs(image[:, :4].astype(int) - picture[:, :4]).max() <= 1


def test_the_ui_image_to_image_with_scale_before_processing_resizes_in_and_out(models: dict[str, Any],
                                                                                canvas: Canvas, run_context) -> None:
    """A 48-pixel canvas generated at 32 (img_resize in, the denoise at the scaled size, img_resize back)."""
    put_image(run_context, "canvas-48.png", block_picture(7, cell=12))
    canvas.picture, canvas.size, canvas.scaled = "canvas-48.png", (48, 48), (SIZE, SIZE)
    g, ids = sd3_ui(models, "img2img", canvas)
    assert sorted(n["type"] for n in g.nodes.values()).count("img_resize") == 2
    [(image, metadata)] = run_batch(batch_of(g, ids, [3]), run_context)
    assert image.shape == (48, 48, 3) and metadata["generation_mode"] == "sd3_img2img"


def test_the_ui_inpaint_with_scale_before_processing_and_a_noise_mask(models: dict[str, Any], canvas: Canvas,
                                                                      run_context) -> None:
    """The scaled inpaint path (picture, mask and noise mask resized, img_noise seeded from the seed node, the result
    and the faded mask resized back) for Z-Image."""
    put_image(run_context, "canvas-noise.png", np.full((CANVAS, CANVAS), 128, np.uint8), mode="L")
    canvas.size, canvas.scaled, canvas.noise_mask = (CANVAS, CANVAS), (48, 48), "canvas-noise.png"
    g, ids = z_image_ui(models, "inpaint", canvas)
    [(image, metadata)] = run_batch(batch_of(g, ids, [3]), run_context)
    assert image.shape == (CANVAS, CANVAS, 3) and metadata["generation_mode"] == "z_image_inpaint"


@pytest.mark.parametrize("base", ["z-image", "flux2", "flux2-dev"])
def test_the_ui_lora_collection_gives_the_single_lora_loaders_image(base: str, models: dict[str, Any],
                                                                    canvas: Canvas, run_context) -> None:
    """lora_selector -> collect -> *_lora_collection_loader as the UI wires LoRAs: the image of the single LoRA
    loader with the same LoRA and weight, not the image without it; the LoRAs are in the metadata."""
    loras = [("lora", 0.8)] if base == "z-image" else [0.8]
    g, ids = BUILDERS[base](models, "txt2img", canvas, loras=loras)
    [(image, metadata)] = run_batch(batch_of(g, ids, [5]), run_context)
    assert np.array_equal(image, run_plain(PLAIN[base](models, 5, lora=0.8), run_context))
    assert changed(image, run_plain(PLAIN[base](models, 5), run_context))
    assert [(lora["model"]["key"], lora["weight"]) for lora in metadata["loras"]] == [
        (models["lora", base]["key"], 0.8)]


def test_the_ui_z_image_control_layer_changes_the_image(models: dict[str, Any], canvas: Canvas,
                                                        run_context) -> None:
    control = np.zeros((SIZE, SIZE, 3), np.uint8)
    control[8:24, 4:28] = 255
    put_image(run_context, "control.png", control)
    g, ids = z_image_ui(models, "txt2img", canvas, control="control.png")
    [(image, _)] = run_batch(batch_of(g, ids, [5]), run_context)
    assert changed(image, run_plain(z_image_plain(models, 5), run_context))


def test_the_ui_z_image_with_guidance_a_negative_prompt_and_seed_variance(models: dict[str, Any], canvas: Canvas,
                                                                          run_context) -> None:
    """guidance_scale > 1 adds the negative encoder and its collect; the seed variance enhancer sits between the
    positive encoder and its collect. Both change the image."""
    plain = run_plain(z_image_plain(models, 5), run_context)
    g, ids = z_image_ui(models, "txt2img", canvas, guidance=2.0, negative="blurry")
    [(guided, metadata)] = run_batch(batch_of(g, ids, [5]), run_context)
    assert metadata["negative_prompt"] == "blurry" and metadata["cfg_scale"] == 2.0
    g, ids = z_image_ui(models, "txt2img", canvas, seed_variance=(0.5, 50.0))
    [(varied, metadata)] = run_batch(batch_of(g, ids, [5]), run_context)
    assert metadata["z_image_seed_variance_enabled"] is True
    for image in (guided, varied):
        assert changed(image, plain)


def region_layer(run_context) -> str:
    """A regional guidance layer's mask: opaque on the left half."""
    region = np.zeros((SIZE, SIZE, 4), np.uint8)
    region[:, :16] = 255
    put_image(run_context, "region.png", region, mode="RGBA")
    return "region.png"


def test_the_ui_flux2_regional_prompt_runs(models: dict[str, Any], canvas: Canvas, run_context) -> None:
    """A FLUX.2 regional guidance layer (alpha_mask_to_tensor, a masked flux2_klein_text_encoder with the global
    encoder's qwen3_encoder and max_seq_len edges, into the positive collect) changes the image."""
    canvas.regions = [Region(region_layer(run_context), positive="a green forest")]
    [(image, _)] = run_batch(batch_of(*flux2_ui(models, "txt2img", canvas), [5]), run_context)
    assert changed(image, run_plain(flux2_plain(models, 5), run_context))


def test_the_ui_z_image_regional_prompt_changes_its_half(models: dict[str, Any], canvas: Canvas,
                                                        run_context) -> None:
    """A Z-Image regional guidance layer (alpha_mask_to_tensor, a masked z_image_text_encoder with the global
    encoder's qwen3_encoder edge, into the positive collect) steers its own half: on a 128x64 image (4x8 tokens),
    against the same layer with nothing painted, the left half changes over twice as much as the right (measured mean
    2.96 vs 0.94 levels; unmasked main layers, image tokens seeing each other and the VAE's decoder spread some).
    With the region's negative and auto-negative in the negative collect and CFG (their masks ignored, as InvokeAI
    does), it runs and changes the guided image. No diffusers pipeline has Z-Image regional prompts: the semantics
    are InvokeAI's."""
    width, height = 128, 64
    canvas.size = (width, height)
    layer = np.zeros((height, width, 4), np.uint8)
    put_image(run_context, "empty-region.png", layer, mode="RGBA")
    layer[:, :width // 2] = 255
    put_image(run_context, "left-region.png", layer, mode="RGBA")
    images = {}
    for name, mask in (("region", "left-region.png"), ("empty", "empty-region.png")):
        canvas.regions = [Region(mask, positive="a green forest")]
        [(images[name], _)] = run_batch(batch_of(*z_image_ui(models, "txt2img", canvas), [5]), run_context)
    diff = np.abs(images["region"].astype(np.int16) - images["empty"])
    left, right = diff[:, :width // 2].mean(), diff[:, width // 2:].mean()
    print(f"z-image region vs empty region: left {left:.2f}, right {right:.2f}")
    assert left > 2 * right
    canvas.regions = [Region("left-region.png", positive="a green forest", negative="fog", auto_negative=True)]
    [(guided, _)] = run_batch(batch_of(*z_image_ui(models, "txt2img", canvas, guidance=2.0, negative="blurry"), [5]),
                              run_context)
    canvas.regions = []
    [(unregioned, _)] = run_batch(batch_of(*z_image_ui(models, "txt2img", canvas, guidance=2.0, negative="blurry"),
                                           [5]), run_context)
    assert changed(guided, unregioned)


def test_the_ui_flux2_reference_images_chain_of_collects(models: dict[str, Any], canvas: Canvas,
                                                         run_context) -> None:
    """Two reference images as the UI chains them (flux_kontext -> collect, each collect's collection into the next)
    give the image of kontext_conditioning listing both in order."""
    put_image(run_context, "ref-a.png", block_picture(11))
    put_image(run_context, "ref-b.png", block_picture(12))
    g, ids = flux2_ui(models, "txt2img", canvas, references=["ref-a.png", "ref-b.png"])
    [(image, metadata)] = run_batch(batch_of(g, ids, [5]), run_context)
    assert len(metadata["ref_images"]) == 2
    assert np.array_equal(image, run_plain(flux2_plain(models, 5, references=["ref-a.png", "ref-b.png"]),
                                           run_context))
    assert not np.array_equal(image, run_plain(flux2_plain(models, 5, references=["ref-b.png", "ref-a.png"]),
                                               run_context))


def test_the_ui_graph_shape(models: dict[str, Any], canvas: Canvas) -> None:
    """The rebuilt shape is the UI's: prefixed random ids, one canvas_output node that alone receives the metadata,
    the prompt and seed nodes without values (the batch fills them)."""
    g, ids = z_image_ui(models, "txt2img", canvas, loras=[("lora", 0.5)])
    document = g.graph()
    assert all(":" in nid for nid in document["nodes"] if not nid.startswith("z_image_control_"))
    [output] = [n for n in document["nodes"].values() if n["id"].startswith("canvas_output:")]
    assert output["type"] == "z_image_l2i" and output["use_cache"] is False
    assert [e["destination"] for e in document["edges"] if e["source"]["node_id"] == g.metadata_id] == [
        {"node_id": output["id"], "field": "metadata"}]
    assert "value" not in document["nodes"][ids["positive"]] and "value" not in document["nodes"][ids["seed"]]


def test_a_ui_canvas_batch_runs_through_airflow(models: dict[str, Any], airflow_run, upload_image, artifact_root: Path,
                                                tmp_path: Path) -> None:
    """A UI batch (Z-Image inpaint with a LoRA, two seeds; the UI's colon ids, uploaded canvas images) through
    `invokeai-airflow run`: every task succeeds and each session's canvas output is the engine's image (within 1
    level) with its seed in the metadata."""
    from invokeai_provider.core.context import RunContext
    from invokeai_provider.storage.base import RunStore, backend_for_uri

    from helpers import png_pixels, task_states, uri_path

    mask = np.full((CANVAS, CANVAS), 255, np.uint8)
    mask[28:36, 28:36] = 0
    canvas = Canvas(picture=upload_image(block_picture(5, cell=CANVAS // 4)), mask=upload_image(mask),
                    size=(CANVAS, CANVAS), mask_blur=8)
    canvas.coherence["edge_radius"] = 8
    g, ids = z_image_ui(models, "inpaint", canvas, loras=[("lora", 0.8)])
    body = batch_of(g, ids, [3, 4])
    path = tmp_path / "ui-batch.json"
    path.write_text(json.dumps(body))
    result = airflow_run(path, extra_env={"AIRFLOW__INVOKEAI__MODEL_ROOT": models["uri"]})
    assert result["state"] == "success" and set(task_states(result).values()) == {"success"}
    outputs = sorted((i for i in result["images"] if i["node_id"].startswith("canvas_output:")),
                     key=lambda i: i["metadata"]["seed"])
    assert [(i["metadata"]["seed"], i["metadata"]["generation_mode"], i["width"]) for i in outputs] == [
        (3, "z_image_inpaint", CANVAS), (4, "z_image_inpaint", CANVAS)]
    engine = RunContext(store=RunStore(backend_for_uri(artifact_root.as_uri()), dag_id="engine", run_id="ui"),
                        services={"models": models["manager"]})
    for record, (image, _) in zip(outputs, run_batch(body, engine)):
        through_airflow = np.frombuffer(png_pixels(record["uri"]), np.uint8).reshape(image.shape)
        assert uri_path(record["uri"]).is_file()
        assert np.abs(through_airflow.astype(int) - image.astype(int)).max() <= 1
