"""FLUX graphs steered by images, in InvokeAI's node shapes, against diffusers' pipelines with the same tiny weights:
Kontext (flux_kontext_image_prep -> flux_kontext -> flux_denoise), FLUX Fill (flux_fill with a Fill model) and
inpainting (flux_vae_encode + a denoise mask); flux_denoise_meta's metadata in the PNG; errors naming the field."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import edge, node, put_image, run_nodes, stored_image
from invokeai_provider.core.context import RunContext
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux import build_flux_model
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a lighthouse in a storm, oil painting"
HEIGHT, WIDTH, STEPS, GUIDANCE, SEED = 64, 48, 3, 3.5, 13


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManager, dict[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("flux-image-root")
    registry = ModelRegistry(root.as_uri())
    installed = {variant: install_model(registry, str(build_flux_model(root / variant, variant=variant, seed=2)),
                                        name=f"tiny-flux-{variant}", inplace=True).identifier()
                 for variant in ("dev", "fill")}
    return ModelManager(registry), installed


@pytest.fixture
def run(tmp_path: Path, models: tuple[ModelManager, dict[str, Any]]) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="flux", run_id="r1"),
                      services={"models": models[0]})


def put_tensor(run: RunContext, name: str, tensor: torch.Tensor) -> str:
    from safetensors.torch import save

    run.store.write("tensors", f"{name}.safetensors", save({"tensor": tensor.contiguous()}))
    return name


def picture(seed: int, height: int = HEIGHT, width: int = WIDTH) -> Image.Image:
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return Image.fromarray((smooth[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))


def generation(identifier: dict[str, Any], **denoise: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """InvokeAI's FLUX text-to-image nodes and edges; more denoise fields as given."""
    nodes = {
        "load": node("load", "flux_model_loader", model=identifier),
        "prompt": node("prompt", "flux_text_encoder", prompt=PROMPT),
        "denoise": node("denoise", "flux_denoise", seed=SEED, num_steps=STEPS, width=WIDTH, height=HEIGHT,
                        guidance=GUIDANCE, **denoise),
        "decode": node("decode", "flux_vae_decode")}
    edges = [edge("load", "clip", "prompt", "clip"), edge("load", "t5_encoder", "prompt", "t5_encoder"),
             edge("load", "max_seq_len", "prompt", "t5_max_seq_len"), edge("load", "transformer", "denoise",
                                                                           "transformer"),
             edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
             edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")]
    return {k: {kk: vv for kk, vv in v.items() if kk != "id"} for k, v in nodes.items()}, edges


def pipeline_parts(manager: ModelManager, identifier: dict[str, Any]) -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from invokeai_provider.core.taxonomy import SubModelType
    from invokeai_provider.models.testing.tiny_flux import SCHEDULERS

    config = manager.get_config(identifier)
    parts: dict[str, Any] = {"scheduler": FlowMatchEulerDiscreteScheduler(**SCHEDULERS["dev"])}
    for name in ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "transformer", "vae"):
        with manager.load(config.identifier(), SubModelType(name)) as model:
            parts[name] = model
    return parts


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


def truncated(reference: np.ndarray) -> np.ndarray:
    return np.floor(reference * 255).astype(np.int16)  # InvokeAI's conversion truncates


def assert_close(mine: np.ndarray, theirs: np.ndarray, what: str) -> None:
    difference = np.abs(mine - theirs).max()
    assert difference <= 1, f"{what} differs from diffusers' pipeline by {difference} levels"


def test_a_kontext_graph_gives_flux_kontext_pipelines_image(run: RunContext, models: Any) -> None:
    from diffusers import FluxKontextPipeline

    from invokeai_provider.models.flux import sampling

    manager, installed = models
    put_image(run, "ref.png", picture(3, 40, 56))
    nodes, edges = generation(installed["dev"])
    nodes["prep"] = {"type": "flux_kontext_image_prep", "images": [{"image_name": "ref.png"}],
                     "use_preferred_resolution": False}
    nodes["kontext"] = {"type": "flux_kontext"}
    edges += [edge("prep", "image", "kontext", "image"),
              edge("kontext", "kontext_cond", "denoise", "kontext_conditioning"),
              edge("load", "vae", "denoise", "controlnet_vae")]
    state = run_nodes(run, nodes, edges)
    prepared = stored_image(run, state.outputs_of("prep")[0])
    assert prepared.size == (48, 32)  # rounded down to 16 px
    mine = pixels(stored_image(run, state.outputs_of("decode")[0]))

    pipe = FluxKontextPipeline(**pipeline_parts(manager, installed["dev"]))
    reference = pipe(image=prepared, prompt=PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS,
                     guidance_scale=GUIDANCE, latents=sampling.pack(sampling.noise(SEED, HEIGHT, WIDTH)),
                     max_sequence_length=512, max_area=HEIGHT * WIDTH, _auto_resize=False,
                     output_type="np").images[0]
    assert_close(mine, truncated(reference), "the Kontext graph")

    without_vae = [e for e in edges if e["destination"] != {"node_id": "denoise", "field": "controlnet_vae"}]
    with pytest.raises(NodeExecutionError, match="field controlnet_vae: Kontext conditioning needs the VAE"):
        run_nodes(run, nodes, without_vae)


def test_kontext_image_prep_sizes_and_concatenates(run: RunContext) -> None:
    put_image(run, "wide.png", picture(1, 32, 48))
    put_image(run, "tall.png", picture(2, 48, 24))
    state = run_nodes(run, {"prep": {"type": "flux_kontext_image_prep",
                                     "images": [{"image_name": "wide.png"}, {"image_name": "tall.png"}]}})
    image = stored_image(run, state.outputs_of("prep")[0])
    # 3:2 is nearest 1248x832 of Kontext's resolutions; the second keeps 1:2 at height 832: 416 wide
    assert image.size == (1248 + 416, 832) and image.mode == "RGB"


def test_a_fill_graph_gives_flux_fill_pipelines_image(run: RunContext, models: Any) -> None:
    from diffusers import FluxFillPipeline

    from invokeai_provider.models.flux import sampling

    manager, installed = models
    source = picture(4)
    put_image(run, "source.png", source)
    mask = torch.zeros(1, HEIGHT, WIDTH, dtype=torch.bool)
    mask[:, 16:48, 16:32] = True
    nodes, edges = generation(installed["fill"])
    nodes["fill"] = {"type": "flux_fill", "image": {"image_name": "source.png"},
                     "mask": {"tensor_name": put_tensor(run, "fill-mask", mask)}}
    edges += [edge("fill", "fill_cond", "denoise", "fill_conditioning"),
              edge("load", "vae", "denoise", "controlnet_vae")]
    mine = pixels(stored_image(run, run_nodes(run, nodes, edges).outputs_of("decode")[0]))

    pipe = FluxFillPipeline(**pipeline_parts(manager, installed["fill"]))
    reference = pipe(PROMPT, image=source, mask_image=mask[:, None].float(), height=HEIGHT, width=WIDTH,
                     num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                     latents=sampling.pack(sampling.noise(SEED, HEIGHT, WIDTH)),
                     generator=torch.Generator().manual_seed(0), max_sequence_length=512, output_type="np").images[0]
    assert_close(mine, truncated(reference), "the Fill graph")

    no_fill = [e for e in edges if e["source"]["node_id"] != "fill"]
    with pytest.raises(NodeExecutionError, match="field fill_conditioning: a FLUX Fill model needs fill"):
        run_nodes(run, nodes, no_fill)
    nodes_dev, edges_dev = generation(installed["dev"])
    nodes_dev["fill"] = nodes["fill"]
    edges_dev.append(edge("fill", "fill_cond", "denoise", "fill_conditioning"))
    with pytest.raises(NodeExecutionError, match="field fill_conditioning: given, but the model is not a FLUX Fill"):
        run_nodes(run, nodes_dev, edges_dev)


def test_an_inpainting_graph_gives_flux_inpaint_pipelines_image(run: RunContext, models: Any) -> None:
    from diffusers import FluxInpaintPipeline

    from invokeai_provider.models.flux import sampling

    manager, installed = models
    source = picture(5)
    put_image(run, "source.png", source)
    keep = torch.ones(1, 1, HEIGHT, WIDTH)  # InvokeAI's denoise mask: 0 where the image is regenerated
    keep[..., 16:48, 16:32] = 0.0
    nodes, edges = generation(installed["dev"], denoise_mask={"mask_name": put_tensor(run, "keep", keep)})
    nodes["encode"] = {"type": "flux_vae_encode", "image": {"image_name": "source.png"}}
    edges += [edge("load", "vae", "encode", "vae"), edge("encode", "latents", "denoise", "latents")]
    mine = pixels(stored_image(run, run_nodes(run, nodes, edges).outputs_of("decode")[0]))

    pipe = FluxInpaintPipeline(**pipeline_parts(manager, installed["dev"]))
    # flux_vae_encode samples with a generator seeded 0; handed the same, diffusers draws the same latents
    reference = pipe(PROMPT, image=source, mask_image=1.0 - keep, height=HEIGHT, width=WIDTH, strength=1.0,
                     num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=sampling.noise(SEED, HEIGHT, WIDTH),
                     generator=torch.Generator().manual_seed(0), max_sequence_length=512, output_type="np").images[0]
    assert_close(mine, truncated(reference), "the inpainting graph")
    outside = (keep[0, 0] == 1).numpy()
    inside_change = np.abs(mine - pixels(source))[~outside].mean()
    assert np.abs(mine - pixels(source))[outside].mean() < inside_change  # the kept region stays nearer the source

    no_latents = [e for e in edges if e["destination"] != {"node_id": "denoise", "field": "latents"}]
    with pytest.raises(NodeExecutionError, match="field denoise_mask: inpainting needs the image's latents"):
        run_nodes(run, nodes, no_latents)


def test_flux_denoise_meta_writes_its_parameters_into_the_png(run: RunContext, models: Any) -> None:
    _, installed = models
    nodes, edges = generation(installed["dev"])
    nodes["denoise"] = {**nodes["denoise"], "type": "flux_denoise_meta", "num_steps": 1}
    edges.append(edge("denoise", "metadata", "decode", "metadata"))
    state = run_nodes(run, nodes, edges)
    [out] = state.outputs_of("denoise")
    assert (out.width, out.height) == (WIDTH, HEIGHT)
    [decoded] = state.outputs_of("decode")
    png = Image.open(io.BytesIO(run.store.read("images", decoded.image.image_name)))
    metadata = json.loads(png.text["invokeai_metadata"])
    assert {k: metadata[k] for k in ("width", "height", "steps", "guidance", "seed", "cfg_scale")} == {
        "width": WIDTH, "height": HEIGHT, "steps": 1, "guidance": GUIDANCE, "seed": SEED, "cfg_scale": 1.0}
    assert metadata["model"]["key"] == installed["dev"]["key"] and metadata["denoising_end"] == 1.0


def test_a_controlnet_graph_gives_flux_controlnet_pipelines_image(run: RunContext, models: Any, tmp_path: Path) -> None:
    from diffusers import FluxControlNetPipeline

    from invokeai_provider.models.flux import sampling
    from invokeai_provider.models.testing.tiny_flux_control import build_flux_controlnet

    manager, installed = models
    controlnet = install_model(manager.registry, str(build_flux_controlnet(tmp_path / "cn", union_modes=4, seed=6)),
                               name="tiny-flux-union").identifier()
    hint = picture(7)
    put_image(run, "hint.png", hint)
    nodes, edges = generation(installed["dev"])
    nodes["control"] = {"type": "flux_controlnet", "image": {"image_name": "hint.png"}, "control_model": controlnet,
                        "control_weight": 0.8, "instantx_control_mode": 1}
    edges += [edge("control", "control", "denoise", "control"), edge("load", "vae", "denoise", "controlnet_vae")]
    mine = pixels(stored_image(run, run_nodes(run, nodes, edges).outputs_of("decode")[0]))

    from invokeai_provider.core.fields import ModelIdentifierField

    with manager.load(ModelIdentifierField.model_validate(controlnet)) as model:
        pipe = FluxControlNetPipeline(controlnet=model, **pipeline_parts(manager, installed["dev"]))
        reference = pipe(PROMPT, control_image=hint, control_mode=1, controlnet_conditioning_scale=0.8,
                         height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                         latents=sampling.pack(sampling.noise(SEED, HEIGHT, WIDTH)),
                         generator=torch.Generator().manual_seed(0), max_sequence_length=512,
                         output_type="np").images[0]
    assert_close(mine, truncated(reference), "the ControlNet graph")

    nodes["control"]["control_weight"] = [0.8, 0.8]
    with pytest.raises(NodeExecutionError, match="field control: a list of 2 control weights for 3 steps"):
        run_nodes(run, nodes, edges)
    with pytest.raises(NodeExecutionError, match="field control_model"):
        run_nodes(run, {**nodes, "control": {**nodes["control"], "control_weight": 1.0,
                                             "control_model": installed["dev"]}}, edges)
    nodes["control"]["control_weight"] = 0.8
    no_vae = [e for e in edges if e["destination"] != {"node_id": "denoise", "field": "controlnet_vae"}]
    with pytest.raises(NodeExecutionError, match="field controlnet_vae: a FLUX ControlNet needs the VAE"):
        run_nodes(run, nodes, no_vae)


def test_an_xlabs_controlnet_graph_needs_no_vae_and_gives_flux_controlnet_pipelines_image(
        run: RunContext, models: Any, tmp_path: Path) -> None:
    from diffusers import FluxControlNetPipeline

    from invokeai_provider.core.fields import ModelIdentifierField
    from invokeai_provider.models.flux import sampling
    from invokeai_provider.models.testing.tiny_flux_control import build_flux_controlnet, build_flux_xlabs_controlnet

    manager, installed = models
    xlabs = install_model(manager.registry, str(build_flux_xlabs_controlnet(tmp_path / "xlabs", seed=6)),
                          name="tiny-flux-xlabs").identifier()
    hint = picture(7)
    put_image(run, "hint.png", hint)
    nodes, edges = generation(installed["dev"])
    nodes["control"] = {"type": "flux_controlnet", "image": {"image_name": "hint.png"}, "control_model": xlabs,
                        "control_weight": 0.8}
    edges += [edge("control", "control", "denoise", "control")]  # no controlnet_vae: XLabs encodes the image itself
    mine = pixels(stored_image(run, run_nodes(run, nodes, edges).outputs_of("decode")[0]))

    with manager.load(ModelIdentifierField.model_validate(xlabs)) as model:
        pipe = FluxControlNetPipeline(controlnet=model, **pipeline_parts(manager, installed["dev"]))
        reference = pipe(PROMPT, control_image=hint, controlnet_conditioning_scale=0.8, height=HEIGHT, width=WIDTH,
                         num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                         latents=sampling.pack(sampling.noise(SEED, HEIGHT, WIDTH)),
                         generator=torch.Generator().manual_seed(0), max_sequence_length=512,
                         output_type="np").images[0]
    assert_close(mine, truncated(reference), "the XLabs ControlNet graph")
    plain_nodes, plain_edges = generation(installed["dev"])
    plain = pixels(stored_image(run, run_nodes(run, plain_nodes, plain_edges).outputs_of("decode")[0]))
    assert np.abs(mine - plain).max() > 5  # the ControlNet steers the image

    # beside an InstantX ControlNet (collected into one list) the VAE is needed again, for the InstantX one
    instantx = install_model(manager.registry, str(build_flux_controlnet(tmp_path / "cn", seed=6)),
                             name="tiny-flux-instantx").identifier()
    nodes["instantx"] = {"type": "flux_controlnet", "image": {"image_name": "hint.png"}, "control_model": instantx}
    nodes["collect"] = {"type": "collect"}
    both = [e for e in edges if e["source"]["node_id"] != "control"]
    both += [edge("control", "control", "collect", "item"), edge("instantx", "control", "collect", "item"),
             edge("collect", "collection", "denoise", "control")]
    with pytest.raises(NodeExecutionError, match="field controlnet_vae: a FLUX ControlNet needs the VAE"):
        run_nodes(run, nodes, both)
    summed = pixels(stored_image(run, run_nodes(run, nodes, both + [edge("load", "vae", "denoise", "controlnet_vae")])
                                 .outputs_of("decode")[0]))
    assert np.abs(summed - mine).max() > 1  # the InstantX residuals are added to the XLabs ones


def test_a_control_lora_graph_gives_the_backends_image(run: RunContext, models: Any) -> None:
    from invokeai_provider.core.fields import ModelIdentifierField
    from invokeai_provider.models.flux import denoise_loop, sampling
    from invokeai_provider.models.flux.control_lora import control_lora_applied, control_lora_condition
    from invokeai_provider.models.flux.text_encoding import FluxConditioning
    from invokeai_provider.models.testing.tiny_install import install_tiny

    manager, installed = models
    control = install_tiny(manager.registry, "control_lora", "flux").config.identifier()
    hint = picture(8)
    put_image(run, "hint.png", hint)
    nodes, edges = generation(installed["dev"])
    nodes["control_lora"] = {"type": "flux_control_lora_loader", "lora": control, "image": {"image_name": "hint.png"},
                             "weight": 0.8}
    edges += [edge("control_lora", "control_lora", "denoise", "control_lora"),
              edge("load", "vae", "denoise", "controlnet_vae")]
    state = run_nodes(run, nodes, edges)
    mine = pixels(stored_image(run, state.outputs_of("decode")[0]))
    plain = pixels(stored_image(run, run_nodes(run, *generation(installed["dev"])).outputs_of("decode")[0]))
    assert np.abs(mine - plain).max() > 5  # the control image steers it

    # the same through the backend by hand: the encoded hint as extra channels, the LoRA applied around the loop
    from safetensors.torch import load

    [prompt] = state.outputs_of("prompt")
    stored = load(run.store.read("conditioning", f"{prompt.conditioning.conditioning_name}.safetensors"))
    parts = pipeline_parts(manager, installed["dev"])
    job = denoise_loop.FluxDenoiseJob(
        noise=sampling.noise(SEED, HEIGHT, WIDTH), height=HEIGHT, width=WIDTH, guidance=GUIDANCE,
        positive=FluxConditioning(t5_embeds=stored["t5_embeds"], clip_embeds=stored["clip_embeds"]),
        timesteps=sampling.schedule(STEPS, (HEIGHT // 16) * (WIDTH // 16), shift=True),
        channel_condition=control_lora_condition(parts["vae"], hint, WIDTH, HEIGHT))
    with manager.load(ModelIdentifierField.model_validate(control)) as lora:
        with control_lora_applied(parts["transformer"], lora, 0.8):
            latents = denoise_loop.run(parts["transformer"], job)
    from invokeai_provider.models.flux import vae as flux_vae

    by_hand = (127.5 * (flux_vae.decode(parts["vae"], latents)[0].clamp(-1, 1) + 1.0)).byte().permute(1, 2, 0)
    assert np.abs(mine - by_hand.numpy().astype(np.int16)).max() <= 1

    fill_nodes, fill_edges = generation(installed["fill"])
    mask = torch.zeros(1, HEIGHT, WIDTH, dtype=torch.bool)
    fill_nodes["control_lora"] = nodes["control_lora"]
    fill_nodes["fill"] = {"type": "flux_fill", "image": {"image_name": "hint.png"},
                          "mask": {"tensor_name": put_tensor(run, "no-fill", mask)}}
    fill_edges += [edge("control_lora", "control_lora", "denoise", "control_lora"),
                   edge("fill", "fill_cond", "denoise", "fill_conditioning"),
                   edge("load", "vae", "denoise", "controlnet_vae")]
    with pytest.raises(NodeExecutionError, match="field control_lora: Control LoRAs are not compatible with FLUX Fill"):
        run_nodes(run, fill_nodes, fill_edges)
    no_vae = [e for e in edges if e["destination"] != {"node_id": "denoise", "field": "controlnet_vae"}]
    with pytest.raises(NodeExecutionError, match="field controlnet_vae: a FLUX Control LoRA needs the VAE"):
        run_nodes(run, nodes, no_vae)


def test_an_ip_adapter_graph_gives_the_backends_image(run: RunContext, models: Any) -> None:
    from safetensors.torch import load

    from invokeai_provider.core.fields import ModelIdentifierField
    from invokeai_provider.models.flux import denoise_loop, sampling
    from invokeai_provider.models.flux import vae as flux_vae
    from invokeai_provider.models.flux.ip_adapter import prepare
    from invokeai_provider.models.flux.text_encoding import FluxConditioning
    from invokeai_provider.models.testing.tiny_install import install_tiny

    manager, installed = models
    adapter = install_tiny(manager.registry, "ip_adapter", "flux").config.identifier()
    encoder = install_tiny(manager.registry, "clip_vision").config.identifier()
    reference = picture(9, 64, 64)
    put_image(run, "reference.png", reference)
    nodes, edges = generation(installed["dev"])
    nodes["ip"] = {"type": "flux_ip_adapter", "image": {"image_name": "reference.png"}, "ip_adapter_model": adapter,
                   "weight": 0.9}
    edges.append(edge("ip", "ip_adapter", "denoise", "ip_adapter"))
    state = run_nodes(run, nodes, edges)
    [ip_output] = state.outputs_of("ip")
    assert ip_output.ip_adapter.image_encoder_model.key == encoder["key"]  # the installed ViT-L stand-in
    mine = pixels(stored_image(run, state.outputs_of("decode")[0]))
    plain = pixels(stored_image(run, run_nodes(run, *generation(installed["dev"])).outputs_of("decode")[0]))
    assert np.abs(mine - plain).max() > 5

    [prompt] = state.outputs_of("prompt")
    stored = load(run.store.read("conditioning", f"{prompt.conditioning.conditioning_name}.safetensors"))
    parts = pipeline_parts(manager, installed["dev"])
    with manager.load(ModelIdentifierField.model_validate(adapter)) as ip_model, \
            manager.load(ModelIdentifierField.model_validate(encoder)) as clip_vision:
        job = denoise_loop.FluxDenoiseJob(
            noise=sampling.noise(SEED, HEIGHT, WIDTH), height=HEIGHT, width=WIDTH, guidance=GUIDANCE,
            positive=FluxConditioning(t5_embeds=stored["t5_embeds"], clip_embeds=stored["clip_embeds"]),
            timesteps=sampling.schedule(STEPS, (HEIGHT // 16) * (WIDTH // 16), shift=True),
            ip_adapters=[prepare(ip_model, clip_vision, reference, 0.9)])
        latents = denoise_loop.run(parts["transformer"], job)
    by_hand = (127.5 * (flux_vae.decode(parts["vae"], latents)[0].clamp(-1, 1) + 1.0)).byte().permute(1, 2, 0)
    assert np.abs(mine - by_hand.numpy().astype(np.int16)).max() <= 1

    nodes["ip"]["weight"] = [0.5, 0.5]
    with pytest.raises(NodeExecutionError, match="field ip_adapter: a list of 2 weights for 3 steps"):
        run_nodes(run, nodes, edges)


@pytest.mark.parametrize("scheduler", ["heun", "lcm"])
def test_flux_denoise_runs_invokeais_other_samplers(run: RunContext, models: Any, scheduler: str) -> None:
    _, installed = models
    events: list[dict[str, Any]] = []
    run.on_progress = events.append
    sampled = pixels(stored_image(run, run_nodes(run, *generation(installed["dev"], scheduler=scheduler))
                                  .outputs_of("decode")[0]))
    assert [e["step"] for e in events if e.get("step")] == [1, 2, 3]  # one per user step
    euler = pixels(stored_image(run, run_nodes(run, *generation(installed["dev"])).outputs_of("decode")[0]))
    assert np.abs(sampled - euler).max() > 3
