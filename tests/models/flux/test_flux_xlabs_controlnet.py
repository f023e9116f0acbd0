"""XLabs FLUX ControlNets as InvokeAI runs them: the image fed to the ControlNet's own encoder (no VAE), residuals on
the double blocks only and repeated cyclically, against diffusers' FluxControlNetPipeline with the same tiny weights
on a transformer deep enough for the mapping to matter; summed with an InstantX ControlNet; XLabs single files
(BFL's names) probed, converted as diffusers' own FLUX converter renames BFL's blocks, and loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from invokeai_provider.models.flux import controlnet as controlnet_module
from invokeai_provider.models.flux import denoise_loop, sampling, vae
from invokeai_provider.models.flux.controlnet import (
    ControlNetLoadError,
    FluxControl,
    control_residuals,
    is_xlabs,
    load_controlnet,
)
from invokeai_provider.models.flux.text_encoding import FluxConditioning, encode_clip, encode_t5
from invokeai_provider.models.flux.xlabs_controlnet import diffusers_to_xlabs, xlabs_to_diffusers
from invokeai_provider.models.testing.tiny_flux import CLIP_WIDTH, MAX_SEQ_LEN, T5_WIDTH, flux_components
from invokeai_provider.models.testing.tiny_flux_control import (
    build_flux_xlabs_controlnet,
    deep_flux_transformer,
    flux_controlnet,
    flux_xlabs_controlnet,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a lighthouse in a storm, oil painting"
HEIGHT, WIDTH, STEPS, GUIDANCE, WEIGHT = 64, 48, 4, 3.5, 0.7
TOLERANCE = 1e-3  # images in [0, 1]; float32 on both sides, only the order of a few sums differs


@pytest.fixture(scope="module")
def deep() -> dict[str, Any]:
    """The tiny dev model with a 3-double-block transformer: a 2-block XLabs ControlNet maps (0, 1, 0) onto it,
    InstantX's mapping would give (0, 0, 1)."""
    return {**flux_components("dev", seed=11), "transformer": deep_flux_transformer(double_blocks=3, seed=11)}


@pytest.fixture(scope="module")
def xlabs() -> Any:
    return flux_xlabs_controlnet(seed=4, double_blocks=2)


def control_picture() -> torch.Tensor:
    """A blocky control image in [0, 1], on 8-bit levels (as a PNG would hold it)."""
    coarse = torch.randint(0, 256, (1, 3, HEIGHT // 8, WIDTH // 8), generator=torch.Generator().manual_seed(3))
    return torch.nn.functional.interpolate(coarse.float(), size=(HEIGHT, WIDTH), mode="nearest") / 255


def ours(parts: dict[str, Any], controls: list[FluxControl]) -> torch.Tensor:
    conditioning = FluxConditioning(
        t5_embeds=encode_t5(parts["tokenizer_2"], parts["text_encoder_2"], PROMPT, MAX_SEQ_LEN["dev"]),
        clip_embeds=encode_clip(parts["tokenizer"], parts["text_encoder"], PROMPT))
    latents = denoise_loop.run(parts["transformer"], denoise_loop.FluxDenoiseJob(
        noise=sampling.noise(5, HEIGHT, WIDTH), positive=conditioning, height=HEIGHT, width=WIDTH, guidance=GUIDANCE,
        timesteps=sampling.schedule(STEPS, (HEIGHT // 16) * (WIDTH // 16), shift=True), controls=controls))
    return (vae.decode(parts["vae"], latents) / 2 + 0.5).clamp(0, 1)


@pytest.fixture(scope="module")
def reference(deep: dict[str, Any], xlabs: Any) -> torch.Tensor:
    """diffusers' FluxControlNetPipeline with the XLabs ControlNet (it feeds the image to the hint encoder and
    repeats the residuals, ``controlnet_blocks_repeat``)."""
    from diffusers import FluxControlNetPipeline
    from PIL import Image

    picture = Image.fromarray((control_picture()[0].permute(1, 2, 0) * 255).round().byte().numpy())
    pipe = FluxControlNetPipeline(controlnet=xlabs, **deep)
    return pipe(PROMPT, control_image=picture, controlnet_conditioning_scale=WEIGHT, height=HEIGHT, width=WIDTH,
                num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                latents=sampling.pack(sampling.noise(5, HEIGHT, WIDTH)), generator=torch.Generator().manual_seed(0),
                max_sequence_length=512, output_type="pt").images


def xlabs_control(model: Any, **settings: Any) -> FluxControl:
    """As flux_denoise prepares it: the control image in [-1, 1], not VAE-encoded."""
    return FluxControl(model=model, condition=control_picture() * 2 - 1, **{"weight": WEIGHT, **settings})


def test_an_xlabs_controlnet_gives_flux_controlnet_pipelines_image(deep: dict[str, Any], xlabs: Any,
                                                                   reference: torch.Tensor) -> None:
    assert is_xlabs(xlabs) and not is_xlabs(flux_controlnet(seed=4))
    mine = ours(deep, [xlabs_control(xlabs)])
    difference = (mine - reference).abs().max().item()
    assert difference < TOLERANCE, f"differs from FluxControlNetPipeline by {difference:.2e}"
    assert (ours(deep, []) - reference).abs().max().item() > 10 * TOLERANCE  # the ControlNet matters


def test_the_cyclic_block_mapping_matters(deep: dict[str, Any], xlabs: Any, reference: torch.Tensor,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = torch.zeros(1), torch.ones(1)
    assert controlnet_module._repeat([a, b], 3) == [a, b, a]
    assert controlnet_module._spread([a, b], 3) == [a, a, b]
    monkeypatch.setattr(controlnet_module, "_repeat", controlnet_module._spread)  # InstantX's mapping instead
    wrong = ours(deep, [xlabs_control(xlabs)])
    assert (wrong - reference).abs().max().item() > 10 * TOLERANCE


def test_xlabs_residuals_are_double_block_only_and_sum_with_instantx(deep: dict[str, Any], xlabs: Any) -> None:
    generator = torch.Generator().manual_seed(8)
    tokens = torch.randn(1, (HEIGHT // 16) * (WIDTH // 16), 64, generator=generator)
    inputs = dict(tokens=tokens, timestep=torch.tensor([0.6]), guidance=GUIDANCE,
                  t5=torch.randn(1, 7, T5_WIDTH, generator=generator),
                  clip=torch.randn(1, CLIP_WIDTH, generator=generator), txt_ids=torch.zeros(7, 3),
                  img_ids=sampling.image_ids(HEIGHT, WIDTH), blocks=(3, 1))
    instantx = FluxControl(flux_controlnet(seed=4), condition=torch.randn(1, tokens.shape[1], 64,
                                                                            generator=generator), weight=0.5)
    with torch.no_grad():
        x_double, x_single = control_residuals([xlabs_control(xlabs)], 0, STEPS, **inputs)
        i_double, i_single = control_residuals([instantx], 0, STEPS, **inputs)
        both_double, both_single = control_residuals([xlabs_control(xlabs), instantx], 0, STEPS, **inputs)
    assert x_single is None and len(x_double) == 3 and x_double[2] is x_double[0]  # block 2 takes sample 0 again
    assert not torch.equal(x_double[0], x_double[1])
    assert all(torch.allclose(s, x + i) for s, x, i in zip(both_double, x_double, i_double))
    assert all(torch.equal(s, i) for s, i in zip(both_single, i_single))  # XLabs adds nothing to single blocks


def test_an_xlabs_single_file_is_probed_and_loaded(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from invokeai_provider.models.model_manager.probe import probe

    path = build_flux_xlabs_controlnet(tmp_path / "xlabs.safetensors", seed=6)
    state = load_file(str(path))
    assert state["double_blocks.1.img_attn.qkv.weight"].shape == (384, 128)  # BFL's layout: fused q/k/v
    assert state["input_hint_block.14.weight"].shape == (16, 16, 3, 3)
    assert state["pos_embed_input.weight"].shape == (128, 64) and "guidance_in.in_layer.weight" in state
    assert not any(k.startswith(("transformer_blocks.", "single_blocks.", "x_embedder.")) for k in state)
    found = probe(path)
    assert (found.type.value, found.format.value, found.base.value) == ("controlnet", "checkpoint", "flux")
    model = load_controlnet(path, torch.float32)
    config = model.config
    assert (config.num_layers, config.num_single_layers, config.attention_head_dim, config.num_attention_heads,
            config.patch_size, config.conditioning_embedding_channels, list(config.axes_dims_rope),
            config.guidance_embeds) == (2, 0, 128, 1, 2, 16, [16, 56, 56], True)
    expected = flux_xlabs_controlnet(seed=6, head_width=128).state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(v, expected[k]) for k, v in loaded.items())
    assert is_xlabs(model)
    folder = tmp_path / "repo"  # XLabs' repositories hold the single file without a config.json
    folder.mkdir()
    path.rename(folder / path.name)
    assert probe(folder).format.value == "checkpoint"
    assert torch.equal(load_controlnet(folder, torch.float32).controlnet_blocks[1].weight,
                       expected["controlnet_blocks.1.weight"])


def test_the_conversion_renames_blocks_as_diffusers_flux_converter_does(tmp_path: Path) -> None:
    """diffusers' BFL-to-diffusers FLUX transformer converter as an independent check of the double blocks and
    embedders (it needs a single block and a final layer, given here as placeholders)."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    state = diffusers_to_xlabs(flux_xlabs_controlnet(seed=6, head_width=128).state_dict())
    placeholders = {f"single_blocks.0.{k}": torch.zeros(1) for k in (
        "modulation.lin.weight", "modulation.lin.bias", "norm.query_norm.scale", "norm.key_norm.scale",
        "linear2.weight", "linear2.bias")}
    placeholders.update({"single_blocks.0.linear1.weight": torch.zeros(4 * 3072 + 3 * 3072, 1),
                         "single_blocks.0.linear1.bias": torch.zeros(4 * 3072 + 3 * 3072),
                         "final_layer.linear.weight": torch.zeros(1), "final_layer.linear.bias": torch.zeros(1),
                         "final_layer.adaLN_modulation.1.weight": torch.zeros(2),
                         "final_layer.adaLN_modulation.1.bias": torch.zeros(2)})
    theirs = convert_flux_transformer_checkpoint_to_diffusers({**state, **placeholders})
    mine = xlabs_to_diffusers(state)
    shared = [k for k in theirs if k in mine]
    assert len(shared) == len([k for k in mine if k.startswith(("transformer_blocks.", "time_text_embed.",
                                                                "context_embedder.", "x_embedder."))])
    assert all(torch.equal(mine[k], theirs[k]) for k in shared)


def test_xlabs_files_that_do_not_fit_are_refused_with_the_reason(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from invokeai_provider.models.model_manager.probe import probe

    narrow = {k: v.contiguous() for k, v in diffusers_to_xlabs(flux_xlabs_controlnet(seed=1).state_dict()).items()}
    save_file(narrow, str(tmp_path / "narrow.safetensors"))
    with pytest.raises(ControlNetLoadError, match="narrow.safetensors: attention heads 16 wide"):
        load_controlnet(tmp_path / "narrow.safetensors", torch.float32)
    keys = ["controlnet_blocks.0.bias", "controlnet_blocks.0.weight", "input_hint_block.0.bias",
            "input_hint_block.0.weight", "pos_embed_input.bias", "pos_embed_input.weight"]
    save_file({k: torch.zeros(2, 2) for k in keys}, str(tmp_path / "partial.safetensors"))
    found = probe(tmp_path / "partial.safetensors")  # InvokeAI's detector keys: recognised, refused at load
    assert (found.type.value, found.base.value) == ("controlnet", "flux")
    with pytest.raises(ControlNetLoadError, match="partial.safetensors: an XLabs FLUX ControlNet without 'img_in"):
        load_controlnet(tmp_path / "partial.safetensors", torch.float32)
    extra = {**narrow, "double_blocks.0.img_attn.lora.weight": torch.zeros(1)}
    with pytest.raises(ControlNetLoadError, match="does not have: \\['double_blocks.0.img_attn.lora.weight'\\]"):
        xlabs_to_diffusers(extra)
