"""SD IP-Adapters and regional prompts through InvokeAI's nodes (ip_adapter -> denoise_latents, compel with masks):
the images of diffusers' StableDiffusionPipeline with its own IP-Adapter loader and processors, with the same tiny
weights, prompt, noise, image prompt and schedule; weights per step, step ranges, methods and masks act as
InvokeAI's do; the cached UNet comes back bit for bit; both file layouts probe, install and find their encoder."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers import edge, put_image, sd1_graph
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.binding import bind_model_fields

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]

PROMPT, SEED, STEPS, SIZE = "a red cat", 7, 4, 64


@pytest.fixture(scope="module")
def adapters(tiny_registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny SD1 adapter in InvokeAI's folder (install-tiny's), Plus and Full ones as single files, and the
    ViT-H-shaped encoder under the name the folder asks for."""
    from invokeai_provider.models.model_manager.install import install_path
    from invokeai_provider.models.testing.tiny_install import install_tiny
    from invokeai_provider.models.testing.tiny_sd_ip_adapter import build_sd_ip_adapter

    install_tiny(tiny_registry, "clip_vision", "sd-1")
    found = {"plain": install_tiny(tiny_registry, "ip_adapter", "sd-1", name="tiny-sd15-ip_adapter").config}
    folder = tmp_path_factory.mktemp("ip-adapters")
    for kind in ("plus", "full"):
        path = build_sd_ip_adapter("sd-1", folder / f"ip-adapter-{kind}.safetensors", kind=kind, layout="file",
                                   seed=5)
        found[kind] = install_path(tiny_registry, path, name=f"tiny-sd15-ip_adapter-{kind}")
    return found


def reference_image(colour: tuple[int, int, int] = (220, 40, 30)) -> Image.Image:
    pixels = np.zeros((96, 96, 3), np.uint8)
    pixels[:] = colour
    pixels[24:72, 24:72] = 255 - np.array(colour, np.uint8)
    return Image.fromarray(pixels)


def ip_graph(*adapters: dict[str, Any], denoise: dict | None = None, extra_nodes: dict | None = None,
             extra_edges: list | None = None) -> dict[str, Any]:
    nodes = {f"ip{i}": {"type": "ip_adapter", "image": settings.pop("image", {"image_name": "ref.png"}), **settings}
             for i, settings in enumerate(dict(a) for a in adapters)}
    collect = {"collect": {"type": "collect"}} if len(adapters) > 1 else {}
    edges = ([edge(n, "ip_adapter", "collect", "item") for n in nodes]
             + [edge("collect", "collection", "denoise", "ip_adapter")] if collect
             else [edge(n, "ip_adapter", "denoise", "ip_adapter") for n in nodes])
    return sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE, denoise=denoise,
                     extra_nodes={**nodes, **collect, **(extra_nodes or {})}, extra_edges=edges + (extra_edges or []))


def image(model_run, tiny_registry, graph: dict[str, Any]) -> np.ndarray:
    put_image(model_run, "ref.png", reference_image())
    put_image(model_run, "ref2.png", reference_image((30, 200, 90)))
    [out] = run_graph(Graph.from_dict(bind_model_fields(graph, tiny_registry)), model_run).outputs_of("decode")
    data = model_run.store.read("images", out.image.image_name)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def diffusers_image(tiny_registry, adapter_config, weight: float) -> np.ndarray:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPImageProcessor

    from invokeai_provider.models.image_encoders.clip_vision import load_clip_vision
    from invokeai_provider.models.stable_diffusion.ip_adapter import read_state
    from invokeai_provider.operators.sd.latents import generate_noise

    pipe = StableDiffusionPipeline.from_pretrained(tiny_registry.model_path(tiny_registry.find("tiny-sd1")),
                                                   local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.image_encoder = load_clip_vision(tiny_registry.model_path(tiny_registry.find("ip_adapter_sd_image_encoder")),
                                          torch.float32)
    pipe.feature_extractor = CLIPImageProcessor()
    pipe.load_ip_adapter(read_state(tiny_registry.model_path(adapter_config)), subfolder="", weight_name="",
                         image_encoder_folder=None)
    pipe.set_ip_adapter_scale(weight)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler.set_timesteps(STEPS)
    # InvokeAI noises zero latents to the first timestep; diffusers scales by init_noise_sigma: the same start
    start = generate_noise("SD", SIZE, SIZE, SEED).float() * pipe.scheduler.sigmas[0] / pipe.scheduler.init_noise_sigma
    reference = pipe(PROMPT, ip_adapter_image=reference_image(), num_inference_steps=STEPS, guidance_scale=7.5,
                     height=SIZE, width=SIZE, latents=start, output_type="np").images[0]
    return (reference * 255).round().astype(int)


@pytest.mark.parametrize("kind", ["plain", "plus", "full"])
def test_an_ip_adapter_gives_diffusers_ip_adapter_image(model_run, tiny_registry, adapters, kind) -> None:
    """Within 1 level of 255 of diffusers' pipeline for each projection InvokeAI runs (plain, Plus, Full)."""
    identifier = adapters[kind].identifier()
    mine = image(model_run, tiny_registry, ip_graph({"ip_adapter_model": identifier, "weight": 0.7}))
    theirs = diffusers_image(tiny_registry, adapters[kind], 0.7)
    assert np.abs(mine - theirs).max() <= 1
    plain = image(model_run, tiny_registry, sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE))
    assert np.abs(plain - theirs).max() > 5  # the image prompt steers it


def test_the_cached_unet_comes_back_unchanged(model_run, tiny_registry, adapters) -> None:
    import torch

    from invokeai_provider.core.fields import ModelIdentifierField
    from invokeai_provider.core.taxonomy import SubModelType

    graph = ip_graph({"ip_adapter_model": adapters["plus"].identifier()})
    manager = model_run.services["models"]
    unet_id = ModelIdentifierField.model_validate(tiny_registry.find("tiny-sd1").identifier(SubModelType.UNet))
    with manager.load(unet_id) as unet:
        before = {name: tensor.clone() for name, tensor in unet.state_dict().items()}
        processors = {name: type(p) for name, p in unet.attn_processors.items()}
    image(model_run, tiny_registry, graph)
    with manager.load(unet_id) as unet:
        after = unet.state_dict()
        assert {name: type(p) for name, p in unet.attn_processors.items()} == processors
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_weights_step_ranges_methods_and_masks(model_run, tiny_registry, adapters) -> None:
    identifier = adapters["plain"].identifier()

    def run(*settings: dict[str, Any], **kwargs: Any) -> np.ndarray:
        return image(model_run, tiny_registry, ip_graph(*({"ip_adapter_model": identifier, **s} for s in settings),
                                                        **kwargs))

    full = run({"weight": 1.0})
    none = run({"weight": 0.0})
    assert np.abs(full - none).max() > 5
    plain = image(model_run, tiny_registry, sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE))
    assert np.abs(none - plain).max() == 0  # weight 0 is no adapter
    # only step 0 (floor(0 * 4)..ceil(0 * 4)) is the same as a weight list for that step alone
    first_only = run({"weight": 1.0, "end_step_percent": 0.0})
    assert np.abs(first_only - run({"weight": [1.0, 0.0, 0.0, 0.0]})).max() == 0
    assert 0 < np.abs(first_only - none).max() and np.abs(first_only - full).max() > 0
    # a method acts in its blocks only: different from full, and from none
    style = run({"weight": 1.0, "method": "style"})
    assert np.abs(style - full).max() > 0 and np.abs(style - none).max() > 0
    # an empty mask keeps the adapter out everywhere; a left-half mask changes the left more than the right
    masks = {"left": {"type": "rectangle_mask", "width": SIZE, "height": SIZE, "x_left": 0, "y_top": 0,
                      "rectangle_width": SIZE // 2, "rectangle_height": SIZE},
             "empty": {"type": "rectangle_mask", "width": SIZE, "height": SIZE, "x_left": 0, "y_top": 0,
                       "rectangle_width": 0, "rectangle_height": 0}}
    empty = run({"weight": 1.0}, extra_nodes={"m": masks["empty"]}, extra_edges=[edge("m", "mask", "ip0", "mask")])
    assert np.abs(empty - none).max() == 0
    left = run({"weight": 1.0}, extra_nodes={"m": masks["left"]}, extra_edges=[edge("m", "mask", "ip0", "mask")])
    assert np.abs(left - none).max() > 0 and np.abs(left - full).max() > 0  # where it acts: see the unit test
    # two adapters (two reference images) add up to something else than either
    both = run({"weight": 0.5}, {"weight": 0.5, "image": {"image_name": "ref2.png"}})
    assert np.abs(both - run({"weight": 0.5})).max() > 0


def test_invalid_ip_adapter_inputs_name_their_field(model_run, tiny_registry, adapters) -> None:
    identifier = adapters["plain"].identifier()
    with pytest.raises(NodeExecutionError, match="field ip_adapter: a list of 2 weights for 4 steps"):
        image(model_run, tiny_registry, ip_graph({"ip_adapter_model": identifier, "weight": [0.5, 0.5]}))
    sd1_lora = tiny_registry.find("tiny-sd1")
    with pytest.raises(NodeExecutionError, match="ip_adapter_model"):
        image(model_run, tiny_registry, ip_graph({"ip_adapter_model": sd1_lora.identifier()}))


def test_the_node_picks_blocks_and_encoder_as_invokeai(model_run, tiny_registry, adapters) -> None:
    from invokeai_provider.models.model_manager.probe import probe
    from invokeai_provider.operators.sd.ip_adapter import target_blocks

    folder = probe(tiny_registry.model_path(adapters["plain"]))
    assert (folder.type.value, folder.format.value, folder.base.value, folder.image_encoder_model_id) == (
        "ip_adapter", "invokeai", "sd-1", "InvokeAI/ip_adapter_sd_image_encoder")
    single = probe(tiny_registry.model_path(adapters["plus"]))
    assert (single.type.value, single.format.value, single.base.value) == ("ip_adapter", "checkpoint", "sd-1")
    assert target_blocks("style", "sd-1") == ["up_blocks.1"]
    assert target_blocks("composition", "sdxl") == ["down_blocks.2.attentions.1"]
    assert target_blocks("full", "sd-2") == ["block"] and target_blocks("style", "sd-2") is None
    graph = bind_model_fields(ip_graph({"ip_adapter_model": adapters["plain"].identifier(), "method": "composition"}),
                              tiny_registry)
    put_image(model_run, "ref.png", reference_image())
    [out] = run_graph(Graph.from_dict(graph), model_run).outputs_of("ip0")
    field = out.ip_adapter
    assert field.target_blocks == ["down_blocks.2", "mid_block"] and field.method == "composition"
    assert tiny_registry.get(field.image_encoder_model.key).name == "ip_adapter_sd_image_encoder"


def test_regional_prompts_hide_each_regions_tokens_outside_its_mask(model_run, tiny_registry) -> None:
    """A prompt masked out everywhere adds nothing (its tokens are hidden from every pixel), a whole-image mask is the
    unmasked prompt, and a prompt confined to half the image is neither absent nor everywhere."""
    def run(regions: list[tuple[str, Any]]) -> np.ndarray:
        nodes, edges = {}, []
        for n, (prompt, rect) in enumerate(regions):
            nodes[f"p{n}"] = {"type": "compel", "prompt": prompt}
            edges += [edge("model", "clip", f"p{n}", "clip"), edge(f"p{n}", "conditioning", "collect", "item")]
            if rect is not None:
                nodes[f"m{n}"] = {"type": "rectangle_mask", "width": SIZE, "height": SIZE, "x_left": 0, "y_top": 0,
                                  "rectangle_width": rect[0], "rectangle_height": rect[1]}
                edges.append(edge(f"m{n}", "mask", f"p{n}", "mask"))
        graph = sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE,
                          extra_nodes={**nodes, "collect": {"type": "collect"}}, extra_edges=edges)
        graph["edges"] = [e for e in graph["edges"] if "pos" not in (e["source"]["node_id"],
                                                                     e["destination"]["node_id"])]
        graph["edges"].append(edge("collect", "collection", "denoise", "positive_conditioning"))
        del graph["nodes"]["pos"]
        return image(model_run, tiny_registry, graph)

    alone = image(model_run, tiny_registry, sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE))
    hidden = run([(PROMPT, None), ("a blue dog in the snow", (0, 0))])
    assert np.abs(hidden - alone).max() <= 1
    whole = run([(PROMPT, (SIZE, SIZE))])
    assert np.abs(whole - alone).max() <= 1
    left = run([(PROMPT, None), ("a blue dog in the snow", (SIZE // 2, SIZE))])
    assert np.abs(left - alone).max() > 3
    unmasked = run([(PROMPT, None), ("a blue dog in the snow", None)])
    assert np.abs(unmasked - left).max() > 3


def test_masks_confine_adapters_and_regions_per_pixel() -> None:
    """At one attention layer: outside an IP-Adapter's mask a pixel gets the text attention alone, inside it the text
    attention plus the weighted image attention; a region's tokens are hidden from pixels outside its mask (so those
    pixels see the other prompt's tokens only), at every size the layers pool the masks to."""
    import torch
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from invokeai_provider.models.stable_diffusion.cross_attention import (
        CrossAttentionProcessor,
        CrossAttentionState,
        IPAdapterUse,
        TextRegions,
        latent_mask,
    )
    from invokeai_provider.models.stable_diffusion.ip_adapter import ImagePrompt

    torch.manual_seed(0)
    attention = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8).eval()
    layer = torch.nn.ModuleDict({"to_k_ip": torch.nn.Linear(12, 16, bias=False),
                                 "to_v_ip": torch.nn.Linear(12, 16, bias=False)})
    pixels = torch.randn(2, 16 * 16, 16)
    text = torch.randn(2, 10, 12)
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[:, :, :8] = True  # the left half
    use = IPAdapterUse(prompt=ImagePrompt(cond=torch.randn(1, 4, 12), uncond=torch.randn(1, 4, 12)), weight=0.6,
                       begin_step_percent=0, end_step_percent=1, target_blocks=["block"], method="full",
                       mask=latent_mask(mask, 16, 16), model=None)
    state = CrossAttentionState(adapters=[use])
    state.start("cpu", torch.float32, (10, 10), 16, 16)
    state.set_step(0, 4)
    with torch.no_grad():
        text_only = AttnProcessor2_0()(attention, pixels, text)
        with_ip = CrossAttentionProcessor(state, [(layer, True, False)])(attention, pixels, text)
        unmasked = use.mask
        use.mask = latent_mask(None, 16, 16)
        state.start("cpu", torch.float32, (10, 10), 16, 16)
        everywhere = CrossAttentionProcessor(state, [(layer, True, False)])(attention, pixels, text)
    left = mask[0].flatten()
    assert torch.allclose(with_ip[:, ~left], text_only[:, ~left], atol=1e-6)
    assert torch.allclose(with_ip[:, left], everywhere[:, left], atol=1e-6)
    assert (with_ip[:, left] - text_only[:, left]).abs().max() > 1e-3
    use.mask = unmasked

    # regions: tokens 0..5 are a prompt everywhere, 5..10 a prompt on the left half only
    regions = TextRegions([(0, 5), (5, 10)], torch.cat([latent_mask(None, 16, 16), latent_mask(mask, 16, 16)], 1))
    state = CrossAttentionState(regions=(regions, regions))
    state.start("cpu", torch.float32, (10, 10), 16, 16)
    with torch.no_grad():
        regional = CrossAttentionProcessor(state, [])(attention, pixels, text)
        first_only = AttnProcessor2_0()(attention, pixels, text[:, :5])
        pooled = CrossAttentionProcessor(state, [])(attention, pixels[:, ::4][:, :64], text)  # an 8 x 8 layer
    assert torch.allclose(regional[:, ~left], first_only[:, ~left], atol=1e-5)
    assert torch.allclose(regional[:, left], text_only[:, left], atol=1e-5)
    assert pooled.shape == (2, 64, 16) and state.text_bias(64, 10)[0, :, 5:].eq(0).any()


def test_denoise_latents_meta_records_its_parameters_and_adapters(model_run, tiny_registry, adapters) -> None:
    """denoise_latents_meta gives denoise_latents' image and writes InvokeAI's keys (its IP-Adapters included) into
    the PNG through l2i's metadata."""
    import json

    graph = ip_graph({"ip_adapter_model": adapters["plain"].identifier(), "weight": 0.7})
    plain = image(model_run, tiny_registry, graph)
    graph["nodes"]["denoise"]["type"] = "denoise_latents_meta"
    graph["edges"].append(edge("denoise", "metadata", "decode", "metadata"))
    put_image(model_run, "ref.png", reference_image())
    state = run_graph(Graph.from_dict(bind_model_fields(graph, tiny_registry)), model_run)
    [out] = state.outputs_of("decode")
    png = Image.open(io.BytesIO(model_run.store.read("images", out.image.image_name)))
    assert np.abs(np.asarray(png.convert("RGB")).astype(int) - plain).max() == 0
    metadata = json.loads(png.text["invokeai_metadata"])
    assert {k: metadata[k] for k in ("width", "height", "steps", "cfg_scale", "scheduler", "seed")} == {
        "width": SIZE, "height": SIZE, "steps": STEPS, "cfg_scale": 7.5, "scheduler": "euler", "seed": SEED}
    [recorded] = metadata["ipAdapters"]
    assert recorded["weight"] == 0.7 and recorded["ip_adapter_model"]["key"] == adapters["plain"].key
    assert "controlnets" not in metadata and metadata["model"]["name"] == "tiny-sd1"
