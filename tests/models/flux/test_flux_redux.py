"""FLUX Redux: our SigLIP encoding, Redux tokens and denoising against diffusers' FluxPriorReduxPipeline feeding
FluxPipeline with the same tiny weights; the tokens matter; InvokeAI's downsampling and weight; the SigLIP lookup;
probing, installing and loading SigLIP folders and Redux files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from invokeai_provider.models.flux import denoise_loop, sampling, vae
from invokeai_provider.models.flux.redux import (
    SIGLIP_NAME,
    ReduxError,
    downsample_and_weight,
    find_siglip,
    load_redux,
    redux_embed,
    siglip_encode,
    with_redux,
)
from invokeai_provider.models.flux.text_encoding import FluxConditioning, encode_clip, encode_t5
from invokeai_provider.models.model_manager.core_models import CoreModel
from invokeai_provider.models.testing.tiny_flux import MAX_SEQ_LEN, flux_components
from invokeai_provider.models.testing.tiny_flux_redux import (
    build_flux_redux,
    build_siglip,
    flux_redux,
    siglip_model,
    siglip_processor,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a lighthouse in a storm, oil painting"
HEIGHT, WIDTH, STEPS, GUIDANCE = 64, 48, 3, 3.5
TOLERANCE = 1e-4  # on images in [0, 1]; the graphs agree to ~1.5e-6


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return flux_components("dev", seed=11)


@pytest.fixture(scope="module")
def redux_parts() -> dict[str, Any]:
    """The tiny SigLIP's vision tower (a SiglipVisionModel), its processor and the Redux embedder."""
    vision = siglip_model(seed=5).vision_model
    assert type(vision).__name__ == "SiglipVisionModel"
    return {"image_encoder": vision.eval(), "feature_extractor": siglip_processor(), "image_embedder": flux_redux(6)}


def picture(seed: int = 3, height: int = 72, width: int = 56) -> Any:
    from PIL import Image

    coarse = torch.rand(1, 3, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return Image.fromarray((smooth[0].permute(1, 2, 0) * 255).round().byte().numpy())


def redux_tokens(parts: dict[str, Any], image: Any) -> torch.Tensor:
    siglip = CoreModel(parts["image_encoder"], parts["feature_extractor"])
    return redux_embed(parts["image_embedder"], siglip_encode(siglip, image))


def ours(dev: dict[str, Any], tokens: list[torch.Tensor]) -> torch.Tensor:
    prompt = FluxConditioning(
        t5_embeds=encode_t5(dev["tokenizer_2"], dev["text_encoder_2"], PROMPT, MAX_SEQ_LEN["dev"]),
        clip_embeds=encode_clip(dev["tokenizer"], dev["text_encoder"], PROMPT))
    latents = denoise_loop.run(dev["transformer"], denoise_loop.FluxDenoiseJob(
        noise=sampling.noise(5, HEIGHT, WIDTH), positive=with_redux(prompt, tokens), height=HEIGHT, width=WIDTH,
        guidance=GUIDANCE, timesteps=sampling.schedule(STEPS, (HEIGHT // 16) * (WIDTH // 16), shift=True)))
    return (vae.decode(dev["vae"], latents) / 2 + 0.5).clamp(0, 1)


def theirs(dev: dict[str, Any], parts: dict[str, Any], image: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' two-stage Redux: the prior pipeline's prompt embeddings (T5 tokens + Redux tokens) fed to
    FluxPipeline; returns the embeddings and the image."""
    from diffusers import FluxPipeline, FluxPriorReduxPipeline

    encoders = {k: dev[k] for k in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
    prior = FluxPriorReduxPipeline(**parts, **encoders)(image, prompt=PROMPT)
    pipe = FluxPipeline(**dev)
    image = pipe(prompt_embeds=prior.prompt_embeds, pooled_prompt_embeds=prior.pooled_prompt_embeds, height=HEIGHT,
                 width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                 latents=sampling.pack(sampling.noise(5, HEIGHT, WIDTH)), generator=torch.Generator().manual_seed(0),
                 output_type="pt").images
    return prior.prompt_embeds, image


def test_redux_gives_flux_prior_redux_and_flux_pipelines_image(dev: dict[str, Any],
                                                               redux_parts: dict[str, Any]) -> None:
    image = picture()
    tokens = redux_tokens(redux_parts, image)
    assert tokens.shape == (1, 256, 4096)  # a 16x16 SigLIP grid, at T5's width
    embeds, reference = theirs(dev, redux_parts, image)
    assert torch.allclose(embeds[:, MAX_SEQ_LEN["dev"]:], tokens, atol=1e-5)  # appended after the 512 T5 tokens
    mine = ours(dev, [tokens])
    difference = (mine - reference).abs().max().item()
    assert difference < TOLERANCE, f"differs from FluxPriorReduxPipeline + FluxPipeline by {difference:.2e}"
    ignored = (ours(dev, []) - reference).abs().max().item()
    assert ignored > 10 * TOLERANCE, f"without the Redux tokens the image moves only {ignored:.2e}"
    other = redux_tokens(redux_parts, picture(seed=9))
    assert (ours(dev, [other]) - mine).abs().max().item() > 10 * TOLERANCE  # another image, another picture


def test_downsampling_and_weight_follow_invokeai() -> None:
    tokens = torch.randn(1, 256, 8, generator=torch.Generator().manual_seed(1))
    assert downsample_and_weight(tokens) is tokens  # factor 1, weight 1: untouched
    grid = tokens.reshape(1, 16, 16, 8).permute(0, 3, 1, 2)
    pooled = torch.nn.functional.avg_pool2d(grid, 2).permute(0, 2, 3, 1).reshape(1, 64, 8)
    assert torch.allclose(downsample_and_weight(tokens, 2, "area"), pooled, atol=1e-6)
    nearest = grid[..., ::4, ::4].permute(0, 2, 3, 1).reshape(1, 16, 8)
    assert torch.equal(downsample_and_weight(tokens, 4, "nearest"), nearest)
    assert downsample_and_weight(tokens, 9, "bicubic").shape == (1, 1, 8)  # the largest factor leaves one token
    assert torch.allclose(downsample_and_weight(tokens, weight=0.5), tokens * 0.25)  # weight squared
    assert torch.allclose(downsample_and_weight(tokens, 2, "area", 0.5), pooled * 0.25, atol=1e-6)
    with pytest.raises(ReduxError, match="255 Redux tokens are not a square grid"):
        downsample_and_weight(tokens[:, :255], 2)
    with pytest.raises(ReduxError, match="a 2x2 token grid cannot be downsampled 3 times"):
        downsample_and_weight(tokens[:, :4], 3)


def test_tokens_follow_the_prompts_in_order() -> None:
    prompt = FluxConditioning(t5_embeds=torch.zeros(1, 5, 16), clip_embeds=torch.ones(1, 4))
    first, second = torch.full((1, 2, 16), 1.0), torch.full((1, 3, 16), 2.0)
    joined = with_redux(prompt, [first, second])
    assert joined.t5_embeds.shape == (1, 10, 16) and joined.clip_embeds is prompt.clip_embeds
    assert joined.t5_embeds[0, :, 0].tolist() == [0.0] * 5 + [1.0] * 2 + [2.0] * 3
    assert with_redux(prompt, []) is prompt
    with pytest.raises(ReduxError, match=r"Redux conditioning 1: tokens of shape \(1, 3, 8\)"):
        with_redux(prompt, [first, torch.zeros(1, 3, 8)])


def test_the_siglip_model_is_invokeais_by_name_else_the_only_one() -> None:
    from types import SimpleNamespace

    from invokeai_provider.core.taxonomy import ModelType

    def model(name: str, kind: ModelType = ModelType.SigLIP) -> Any:
        return SimpleNamespace(name=name, type=kind)

    with pytest.raises(ReduxError, match="no siglip model is installed, and it cannot be downloaded here; install google/siglip-so400m-patch14-384"):
        find_siglip([model("clip", ModelType.CLIPEmbed)])
    assert find_siglip([model("mine"), model("redux", ModelType.FluxRedux)]).name == "mine"
    assert find_siglip([model("a"), model(SIGLIP_NAME), model("b")]).name == SIGLIP_NAME
    with pytest.raises(ReduxError, match=r"several siglip models are installed \(a, b\)"):
        find_siglip([model("b"), model("a")])


def test_siglip_folders_and_redux_files_are_probed_installed_and_loaded(tmp_path: Path) -> None:
    import json

    from invokeai_provider.core.fields import ModelIdentifierField
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelLoadError, ModelManager
    from invokeai_provider.models.model_manager.probe import ProbeError, probe
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    folder = build_siglip(tmp_path / "siglip", seed=5)
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["SiglipModel"]  # as the hub's
    found = probe(folder)
    assert (found.type.value, found.format.value, found.base.value) == ("siglip", "diffusers", "any")
    single = build_flux_redux(tmp_path / "redux.safetensors", seed=6)
    found = probe(single)
    assert (found.type.value, found.format.value, found.base.value) == ("flux_redux", "checkpoint", "flux")

    registry = ModelRegistry((tmp_path / "root").as_uri())
    manager = ModelManager(registry, device="cpu")
    siglip_id = ModelIdentifierField.model_validate(install_model(registry, str(folder), name="s").identifier())
    redux_id = ModelIdentifierField.model_validate(install_model(registry, str(single), name="r").identifier())
    with manager.load(siglip_id) as siglip:
        assert type(siglip.model).__name__ == "SiglipVisionModel" and siglip.model.dtype == torch.float32
        expected = siglip_model(seed=5).vision_model.state_dict()
        assert siglip.model.state_dict().keys() == expected.keys()
        assert all(torch.equal(v, expected[k]) for k, v in siglip.model.state_dict().items())
        encoded = siglip_encode(siglip, picture())
    with manager.load(redux_id) as redux:
        assert type(redux).__name__ == "ReduxImageEncoder"
        reference = flux_redux(6).state_dict()
        assert all(torch.equal(v, reference[k].to(torch.bfloat16).float()) for k, v in redux.state_dict().items())
        assert redux_embed(redux, encoded).shape == (1, 256, 4096)

    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ProbeError, match="SigLIP model without preprocessor_config.json"):
        probe(folder)
    from safetensors.torch import save_file

    narrow = tmp_path / "narrow.safetensors"
    save_file({"redux_up.weight": torch.zeros(48, 8), "redux_up.bias": torch.zeros(48),
               "redux_down.weight": torch.zeros(16, 48), "redux_down.bias": torch.zeros(16)}, str(narrow))
    assert probe(narrow).type.value == "flux_redux"  # InvokeAI's probe reads the names only
    with pytest.raises(ReduxError, match="FLUX.1's map SigLIP tokens to T5's 4096"):
        load_redux(narrow, torch.float32)
    narrow_id = ModelIdentifierField.model_validate(install_model(registry, str(narrow), name="n").identifier())
    with pytest.raises(ModelLoadError, match="model 'n'.*could not be loaded: ReduxError"):
        with manager.load(narrow_id):
            pass
