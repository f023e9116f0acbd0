"""FLUX Control LoRAs: our conversion gives diffusers' converted state dict; the denoising loop with the LoRA applied
(x_embedder widened to 128 channels) and the control image's latents as extra channels gives FluxControlPipeline's
image with a transformer merged by hand as diffusers loads the LoRA; the cached transformer comes back bit for bit;
probing (not as an ordinary FLUX LoRA), installing and loading."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from invokeai_provider.models.flux import denoise_loop, sampling, vae
from invokeai_provider.models.flux.control_lora import (
    ControlLoRAError,
    control_lora_applied,
    control_lora_condition,
    is_flux_control_lora,
    to_diffusers_control_lora,
)
from invokeai_provider.models.flux.text_encoding import FluxConditioning, encode_clip, encode_t5
from invokeai_provider.models.testing.tiny_flux import MAX_SEQ_LEN, flux_components
from invokeai_provider.models.testing.tiny_flux_control_lora import build_flux_control_lora, flux_control_lora_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a lighthouse in a storm, oil painting"
HEIGHT, WIDTH, STEPS, GUIDANCE, WEIGHT = 64, 48, 4, 3.5, 0.8
TOLERANCE = 1e-4  # full parity is ~1e-6; without the norm scales the image moves ~2e-3


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return flux_components("dev", seed=11)


@pytest.fixture(scope="module")
def lora() -> dict[str, torch.Tensor]:
    return to_diffusers_control_lora(flux_control_lora_state(seed=3))


def control_picture() -> torch.Tensor:
    """A blocky control image in [0, 1], on 8-bit levels (as a PNG would hold it)."""
    coarse = torch.randint(0, 256, (1, 3, HEIGHT // 8, WIDTH // 8), generator=torch.Generator().manual_seed(3))
    return torch.nn.functional.interpolate(coarse.float(), size=(HEIGHT, WIDTH), mode="nearest") / 255


def as_pil(image: torch.Tensor) -> Any:
    from PIL import Image

    return Image.fromarray((image[0].permute(1, 2, 0) * 255).round().byte().numpy())


def conditioning(parts: dict[str, Any]) -> FluxConditioning:
    return FluxConditioning(
        t5_embeds=encode_t5(parts["tokenizer_2"], parts["text_encoder_2"], PROMPT, MAX_SEQ_LEN["dev"]),
        clip_embeds=encode_clip(parts["tokenizer"], parts["text_encoder"], PROMPT))


def ours(parts: dict[str, Any], lora: dict[str, torch.Tensor] | None, weight: float = WEIGHT) -> torch.Tensor:
    job = denoise_loop.FluxDenoiseJob(
        noise=sampling.noise(5, HEIGHT, WIDTH), positive=conditioning(parts), height=HEIGHT, width=WIDTH,
        guidance=GUIDANCE, timesteps=sampling.schedule(STEPS, (HEIGHT // 16) * (WIDTH // 16), shift=True))
    if lora is None:
        latents = denoise_loop.run(parts["transformer"], job)
    else:
        job.channel_condition = control_lora_condition(parts["vae"], control_picture(), WIDTH, HEIGHT)
        with control_lora_applied(parts["transformer"], lora, weight) as transformer:
            latents = denoise_loop.run(transformer, job)
    return (vae.decode(parts["vae"], latents) / 2 + 0.5).clamp(0, 1)


def merged_as_diffusers_loads(transformer: Any, lora: dict[str, torch.Tensor], weight: float) -> Any:
    """A copy of ``transformer`` with the converted LoRA merged as diffusers loads it: a layer narrower than its
    lora_A is expanded with zeros (the old weights first), then ``weight * (B @ A)`` and ``weight * lora_B.bias``;
    norm weights are loaded as they are; ``config.in_channels`` follows x_embedder."""
    merged = copy.deepcopy(transformer)
    with torch.no_grad():
        for key, value in lora.items():
            name = key.removeprefix("transformer.")
            if not name.endswith((".lora_A.weight", ".lora_B.weight", ".lora_B.bias")):
                merged.get_parameter(name).copy_(value)
            elif name.endswith(".lora_A.weight"):
                path = name.removesuffix(".lora_A.weight")
                module = merged.get_submodule(path)
                up = lora[f"transformer.{path}.lora_B.weight"]
                if value.shape[1] > module.in_features:
                    parent, _, child = path.rpartition(".")
                    wide = torch.nn.Linear(value.shape[1], module.out_features)
                    wide.weight.zero_()
                    wide.weight[:, : module.in_features] = module.weight
                    wide.bias.copy_(module.bias)
                    setattr(merged.get_submodule(parent) if parent else merged, child, wide)
                    module = wide
                module.weight += weight * (up @ value)
                module.bias += weight * lora[f"transformer.{path}.lora_B.bias"]
    merged.register_to_config(in_channels=merged.x_embedder.in_features)
    return merged


def theirs(parts: dict[str, Any], transformer: Any) -> torch.Tensor:
    from diffusers import FluxControlPipeline

    pipe = FluxControlPipeline(**{**parts, "transformer": transformer})
    return pipe(PROMPT, control_image=as_pil(control_picture()), height=HEIGHT, width=WIDTH,
                num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=sampling.pack(sampling.noise(5, HEIGHT,
                                                                                                         WIDTH)),
                generator=torch.Generator().manual_seed(0), max_sequence_length=512, output_type="pt").images


def test_a_control_lora_gives_flux_control_pipelines_image(dev: dict[str, Any], lora: dict[str, Any]) -> None:
    reference = theirs(dev, merged_as_diffusers_loads(dev["transformer"], lora, WEIGHT))
    mine = ours(dev, lora)
    difference = (mine - reference).abs().max().item()
    assert difference < TOLERANCE, f"differs from FluxControlPipeline by {difference:.2e}"
    plain = ours(dev, None)
    assert (plain - reference).abs().max().item() > 10 * TOLERANCE  # the Control LoRA matters
    # weight 0: only the widening, whose control columns are zeros: the plain model's image
    assert (ours(dev, lora, weight=0.0) - plain).abs().max().item() < 1e-5


def test_the_condition_is_the_control_images_seeded_latents_resized_bicubic(dev: dict[str, Any]) -> None:
    from PIL import Image

    picture = control_picture()
    condition = control_lora_condition(dev["vae"], picture, WIDTH, HEIGHT)
    expected = sampling.pack(vae.encode_seeded(dev["vae"], picture * 2 - 1))
    assert condition.shape == (1, (HEIGHT // 16) * (WIDTH // 16), 64)
    assert torch.allclose(condition, expected, atol=1e-5)
    assert torch.equal(control_lora_condition(dev["vae"], as_pil(picture), WIDTH, HEIGHT), condition)
    small = as_pil(picture).resize((WIDTH // 2, HEIGHT // 2))
    grown = small.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)  # InvokeAI's resize to the generation's size
    assert torch.equal(control_lora_condition(dev["vae"], small, WIDTH, HEIGHT),
                       control_lora_condition(dev["vae"], grown, WIDTH, HEIGHT))
    with pytest.raises(ControlLoRAError, match="multiples of 16"):
        control_lora_condition(dev["vae"], picture, WIDTH + 8, HEIGHT)


def test_the_cached_transformer_is_restored_bit_for_bit(dev: dict[str, Any], lora: dict[str, Any]) -> None:
    from invokeai_provider.models.flux.lora_conversion import to_diffusers_names
    from invokeai_provider.models.patches.lora import apply_loras, load_lora_file
    from invokeai_provider.models.testing.tiny_flux import build_flux_lora

    transformer = dev["transformer"]
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    module, config = transformer.x_embedder, transformer.config

    def unchanged() -> bool:
        now = transformer.state_dict()
        return now.keys() == before.keys() and all(torch.equal(v, before[k]) for k, v in now.items())

    with pytest.raises(RuntimeError, match="cancelled"):
        with control_lora_applied(transformer, lora, 1.5):
            assert transformer.config.in_channels == 128 and transformer.x_embedder.in_features == 128
            assert torch.equal(transformer.transformer_blocks[0].attn.norm_q.weight,
                               lora["transformer.transformer_blocks.0.attn.norm_q.weight"])
            assert not torch.equal(transformer.proj_out.bias, before["proj_out.bias"])
            raise RuntimeError("cancelled")
    assert unchanged() and transformer.x_embedder is module and transformer.config.in_channels == 64
    assert transformer.config == config

    import tempfile

    with tempfile.TemporaryDirectory() as folder:  # an ordinary LoRA patched first, the Control LoRA last
        plain = to_diffusers_names(load_lora_file(build_flux_lora(Path(folder) / "l.safetensors", style="aitoolkit")))
    with apply_loras(transformer, [(plain, 0.5)], target="transformer", base="flux"):
        patched = transformer.x_embedder.weight.clone()
        with control_lora_applied(transformer, lora, 0.0):
            assert torch.equal(transformer.x_embedder.weight[:, :64], patched)
            assert not transformer.x_embedder.weight[:, 64:].any()
    assert unchanged()

    for bad, match in (({k: v for k, v in lora.items() if "x_embedder.lora_B.bias" not in k}, "no x_embedder"),
                       ({**lora, "transformer.proj_out.lora_B.bias": torch.zeros(3)}, "bias for 'proj_out'"),
                       ({**lora, "transformer.norm_out.linear.lora_A.weight": torch.zeros(4, 7)}, "does not fit")):
        with pytest.raises(ControlLoRAError, match=match):
            with control_lora_applied(transformer, bad, 1.0):
                pass
        assert unchanged() and transformer.x_embedder is module


def full_size_bfl_control_lora() -> dict[str, torch.Tensor]:
    """Every key of FLUX.1-dev's Control LoRAs at their real widths (what diffusers' converter needs), rank 2."""
    w, mlp, generator = 3072, 12288, torch.Generator().manual_seed(0)
    layers = {"img_in": (w, 128), "txt_in": (w, 4096), "time_in.in_layer": (w, 256), "time_in.out_layer": (w, w),
              "vector_in.in_layer": (w, 768), "vector_in.out_layer": (w, w), "guidance_in.in_layer": (w, 256),
              "guidance_in.out_layer": (w, w), "final_layer.linear": (64, w), "final_layer.adaLN_modulation.1": (2 * w, w)}
    for i in range(19):
        for s in ("img", "txt"):
            layers |= {f"double_blocks.{i}.{s}_attn.qkv": (3 * w, w), f"double_blocks.{i}.{s}_attn.proj": (w, w),
                       f"double_blocks.{i}.{s}_mlp.0": (mlp, w), f"double_blocks.{i}.{s}_mlp.2": (w, mlp),
                       f"double_blocks.{i}.{s}_mod.lin": (6 * w, w)}
    for i in range(38):
        layers |= {f"single_blocks.{i}.linear1": (3 * w + mlp, w), f"single_blocks.{i}.linear2": (w, w + mlp),
                   f"single_blocks.{i}.modulation.lin": (3 * w, w)}
    state: dict[str, torch.Tensor] = {}
    for name, (fan_out, fan_in) in layers.items():
        state |= {f"{name}.lora_A.weight": torch.randn(2, fan_in, generator=generator),
                  f"{name}.lora_B.weight": torch.randn(fan_out, 2, generator=generator),
                  f"{name}.lora_B.bias": torch.randn(fan_out, generator=generator)}
    norms = [f"double_blocks.{i}.{s}_attn.norm" for i in range(19) for s in ("img", "txt")]
    for norm in norms + [f"single_blocks.{i}.norm" for i in range(38)]:
        state |= {f"{norm}.query_norm.scale": torch.randn(128, generator=generator),
                  f"{norm}.key_norm.scale": torch.randn(128, generator=generator)}
    return state


def test_conversion_gives_diffusers_converted_state_dict() -> None:
    from diffusers.loaders.lora_conversion_utils import _convert_bfl_flux_control_lora_to_diffusers

    state = full_size_bfl_control_lora()
    assert is_flux_control_lora(state) and is_flux_control_lora({k: tuple(v.shape) for k, v in state.items()})
    mine = to_diffusers_control_lora(state)
    expected = _convert_bfl_flux_control_lora_to_diffusers(dict(state))
    assert mine.keys() == expected.keys()
    final = "transformer.norm_out.linear.lora_A.weight"
    assert all(torch.equal(v, expected[k]) for k, v in mine.items() if k != final)
    # diffusers swaps the final modulation's shift/scale halves in lora_A's rank rows too, which changes B @ A; the
    # update must be BFL's with its output halves swapped (InvokeAI patches BFL's layer), as ours is
    assert torch.equal(expected[final], mine[final].flip(0))
    bfl = state["final_layer.adaLN_modulation.1.lora_B.weight"] @ state["final_layer.adaLN_modulation.1.lora_A.weight"]
    update = mine["transformer.norm_out.linear.lora_B.weight"] @ mine[final]
    assert torch.allclose(update, torch.cat(bfl.chunk(2)[::-1]))


def test_control_loras_are_probed_installed_and_loaded(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from invokeai_provider.core.fields import ModelIdentifierField
    from invokeai_provider.models.flux.lora_conversion import flux_lora_format
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelLoadError, ModelManager
    from invokeai_provider.models.model_manager.probe import probe
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_flux import build_flux_lora

    single = build_flux_control_lora(tmp_path / "canny.safetensors", seed=3)
    found = probe(single)
    assert (found.type.value, found.format.value, found.base.value) == ("control_lora", "lycoris", "flux")
    state = flux_control_lora_state(seed=3)
    assert flux_lora_format(state) is None  # never an ordinary FLUX LoRA, whatever the order of the checks
    for style in ("kohya", "aitoolkit", "diffusers"):  # and ordinary FLUX LoRAs are not Control LoRAs
        assert probe(build_flux_lora(tmp_path / f"{style}.safetensors", style=style)).type.value == "lora"
    narrow = {k: (v[:, :64] if k == "img_in.lora_A.weight" else v) for k, v in state.items()}
    assert not is_flux_control_lora(narrow)  # InvokeAI's test: img_in takes 128 channels
    assert not is_flux_control_lora({**state, "img_in.alpha": torch.tensor(1.0)})  # only its four kinds of keys

    registry = ModelRegistry((tmp_path / "root").as_uri())
    manager = ModelManager(registry, device="cpu")
    identifier = ModelIdentifierField.model_validate(install_model(registry, str(single), name="c").identifier())
    assert identifier.type.value == "control_lora"
    with manager.load(identifier) as loaded:
        expected = to_diffusers_control_lora(state)
        assert loaded.keys() == expected.keys() and all(torch.equal(v, expected[k]) for k, v in loaded.items())
        assert loaded["transformer.x_embedder.lora_A.weight"].shape == (4, 128)
        assert "transformer.single_transformer_blocks.0.attn.norm_k.weight" in loaded

    odd = dict(state)
    odd["double_blocks.0.img_attn.norm.value_norm.scale"] = odd.pop("double_blocks.0.img_attn.norm.key_norm.scale")
    path = tmp_path / "odd.safetensors"
    save_file(odd, str(path))
    assert probe(path).type.value == "control_lora"  # InvokeAI's probe reads the key pattern only
    odd_id = ModelIdentifierField.model_validate(install_model(registry, str(path), name="odd").identifier())
    with pytest.raises(ModelLoadError, match="model 'odd'.*ControlLoRAError: .*value_norm.scale' is not a FLUX query/key norm "
                       "scale"):
        with manager.load(odd_id):
            pass
