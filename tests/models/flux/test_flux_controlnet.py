"""FLUX ControlNets (InstantX, plain and union) in the denoising loop against diffusers' FluxControlNetPipeline with
the same tiny weights; InvokeAI's step range and weights have teeth; probing and loading of folders and single
files. XLabs ControlNets: test_flux_xlabs_controlnet."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest
import torch

from invokeai_provider.models.flux import denoise_loop, sampling, vae
from invokeai_provider.models.flux.controlnet import FluxControl, load_controlnet
from invokeai_provider.models.flux.text_encoding import FluxConditioning, encode_clip, encode_t5
from invokeai_provider.models.testing.tiny_flux import MAX_SEQ_LEN, flux_components
from invokeai_provider.models.testing.tiny_flux_control import build_flux_controlnet, flux_controlnet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a lighthouse in a storm, oil painting"
HEIGHT, WIDTH, STEPS, GUIDANCE = 64, 48, 4, 3.5
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return flux_components("dev", seed=11)


def control_picture() -> torch.Tensor:
    """A blocky control image in [0, 1], on 8-bit levels (as a PNG would hold it)."""
    coarse = torch.randint(0, 256, (1, 3, HEIGHT // 8, WIDTH // 8), generator=torch.Generator().manual_seed(3))
    return torch.nn.functional.interpolate(coarse.float(), size=(HEIGHT, WIDTH), mode="nearest") / 255


def as_pil(image: torch.Tensor) -> Any:
    from PIL import Image

    return Image.fromarray((image[0].permute(1, 2, 0) * 255).round().byte().numpy())


def ours(parts: dict[str, Any], controls: list[FluxControl]) -> torch.Tensor:
    conditioning = FluxConditioning(
        t5_embeds=encode_t5(parts["tokenizer_2"], parts["text_encoder_2"], PROMPT, MAX_SEQ_LEN["dev"]),
        clip_embeds=encode_clip(parts["tokenizer"], parts["text_encoder"], PROMPT))
    latents = denoise_loop.run(parts["transformer"], denoise_loop.FluxDenoiseJob(
        noise=sampling.noise(5, HEIGHT, WIDTH), positive=conditioning, height=HEIGHT, width=WIDTH, guidance=GUIDANCE,
        timesteps=sampling.schedule(STEPS, (HEIGHT // 16) * (WIDTH // 16), shift=True), controls=controls))
    return (vae.decode(parts["vae"], latents) / 2 + 0.5).clamp(0, 1)


def control(parts: dict[str, Any], model: Any, **settings: Any) -> FluxControl:
    condition = sampling.pack(vae.encode_seeded(parts["vae"], control_picture() * 2 - 1))
    return FluxControl(model=model, condition=condition, **settings)


def theirs(parts: dict[str, Any], model: Any, scale: float, mode: Optional[int] = None) -> torch.Tensor:
    from diffusers import FluxControlNetPipeline

    pipe = FluxControlNetPipeline(controlnet=model, **parts)
    return pipe(PROMPT, control_image=as_pil(control_picture()), control_mode=mode, controlnet_conditioning_scale=scale,
                height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                latents=sampling.pack(sampling.noise(5, HEIGHT, WIDTH)), generator=torch.Generator().manual_seed(0),
                max_sequence_length=512, output_type="pt").images


@pytest.mark.parametrize("union", [False, True], ids=["instantx", "union"])
def test_a_controlnet_gives_flux_controlnet_pipelines_image(dev: dict[str, Any], union: bool) -> None:
    model = flux_controlnet(union_modes=7 if union else None, seed=4)
    mine = ours(dev, [control(dev, model, weight=0.7, mode=2 if union else None)])
    reference = theirs(dev, model, 0.7, mode=2 if union else None)
    difference = (mine - reference).abs().max().item()
    assert difference < TOLERANCE, f"differs from FluxControlNetPipeline by {difference:.2e}"
    assert (ours(dev, []) - reference).abs().max().item() > 10 * TOLERANCE  # the ControlNet matters
    if union:  # no mode: InvokeAI's zero mode embedding, which is mode 0 of an embedder whose row 0 is zero
        import copy

        zeroed = copy.deepcopy(model)
        with torch.no_grad():
            zeroed.controlnet_mode_embedder.weight[0] = 0.0
        no_mode = ours(dev, [control(dev, model, weight=0.7)])
        assert torch.allclose(no_mode, ours(dev, [control(dev, zeroed, weight=0.7, mode=0)]), atol=1e-6)
        assert (no_mode - mine).abs().max().item() > 1e-5  # and not mode 2's image


def test_step_range_and_weights_follow_invokeai(dev: dict[str, Any]) -> None:
    model = flux_controlnet(seed=4)
    assert FluxControl(model, torch.zeros(1), begin_step_percent=0.25, end_step_percent=0.5).weight_at(0, 4) == 0.0
    window = FluxControl(model, torch.zeros(1), weight=[0.1, 0.2, 0.3, 0.4], begin_step_percent=0.25,
                         end_step_percent=0.5)
    assert [window.weight_at(i, 4) for i in range(4)] == [0.0, 0.2, 0.3, 0.0]  # floor(1) .. ceil(2)
    plain = ours(dev, [])
    assert torch.equal(ours(dev, [control(dev, model, weight=0.0)]), plain)  # weight 0: no residuals at all
    late = ours(dev, [control(dev, model, begin_step_percent=0.9)])
    full = ours(dev, [control(dev, model)])
    assert (late - plain).abs().max() < (full - plain).abs().max()  # acting on the last step only moves it less
    two = ours(dev, [control(dev, model, weight=0.5), control(dev, model, weight=0.5)])
    assert (two - full).abs().max().item() < TOLERANCE  # two at half weight sum to one at full


def test_folders_and_single_files_are_probed_and_loaded(tmp_path: Path) -> None:
    from invokeai_provider.models.model_manager.probe import probe

    folder = build_flux_controlnet(tmp_path / "cn")
    found = probe(folder)
    assert (found.type.value, found.format.value, found.base.value) == ("controlnet", "diffusers", "flux")
    assert load_controlnet(folder, torch.float32).config.num_layers == 1
    single = build_flux_controlnet(tmp_path / "union.safetensors", union_modes=3)
    found = probe(single)
    assert (found.type.value, found.format.value, found.base.value) == ("controlnet", "checkpoint", "flux")
    model = load_controlnet(single, torch.float32)
    config = model.config
    assert (config.num_mode, config.attention_head_dim, config.num_attention_heads, config.num_single_layers,
            list(config.axes_dims_rope), config.guidance_embeds) == (3, 128, 1, 1, [16, 56, 56], True)
    expected = flux_controlnet(union_modes=3, head_width=128).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())

