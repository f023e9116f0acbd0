"""FLUX IP-Adapter (XLabs): our adapter, CLIP vision encoding and per-step attention hook in a small Euler loop
against diffusers' FluxPipeline with the same file loaded through diffusers' own loader (``load_ip_adapter``) and
the same CLIP vision folder; the image prompt matters; the transformer is as before once the hook exits;
InvokeAI's step range, per-step weights and skipping of small weights; probing, installing and loading."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from invokeai_provider.models.image_encoders.clip_vision import ClipVisionError, find_clip_vision, ip_adapter_embeds, \
    load_clip_vision
from invokeai_provider.models.flux import sampling, vae
from invokeai_provider.models.flux.ip_adapter import (
    FluxIPAdapter,
    FluxIPAdapterError,
    ip_adapters_applied,
    load_ip_adapter,
    prepare,
    single_image,
)
from invokeai_provider.models.flux.text_encoding import encode_clip, encode_t5
from invokeai_provider.models.testing.tiny_flux import MAX_SEQ_LEN, flux_components
from invokeai_provider.models.testing.tiny_flux_ip_adapter import (
    build_clip_vision,
    build_flux_ip_adapter,
    flux_ip_adapter_state,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT, NEGATIVE = "a lighthouse in a storm, oil painting", "blurry"
HEIGHT, WIDTH, STEPS, GUIDANCE = 64, 48, 3, 3.5
TOLERANCE = 1e-4  # on images in [0, 1]


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return flux_components("dev", seed=11)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flux-ip-adapter")
    return {"adapter": build_flux_ip_adapter(root / "adapter" / "ip_adapter.safetensors", seed=5),
            "encoder": build_clip_vision(root / "clip-vit-large-patch14", seed=6)}


@pytest.fixture(scope="module")
def loaded(files: dict[str, Path]) -> dict[str, Any]:
    return {"adapter": load_ip_adapter(files["adapter"], torch.float32),
            "encoder": load_clip_vision(files["encoder"], torch.float32)}


def picture(seed: int = 3, height: int = 72, width: int = 56) -> Any:
    from PIL import Image

    coarse = torch.rand(1, 3, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return Image.fromarray((smooth[0].permute(1, 2, 0) * 255).round().byte().numpy())


def ours(dev: dict[str, Any], adapters: list[FluxIPAdapter], cfg: float = 1.0) -> torch.Tensor:
    """Euler steps as flux_denoise takes them, the transformer called with the hook's kwargs (positive and, with
    true CFG, negative), the way the lead wires it into the loop."""
    transformer = dev["transformer"]

    def conditioning(prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (encode_t5(dev["tokenizer_2"], dev["text_encoder_2"], prompt, MAX_SEQ_LEN["dev"]),
                encode_clip(dev["tokenizer"], dev["text_encoder"], prompt))

    positive, negative = conditioning(PROMPT), conditioning(NEGATIVE)
    tokens = sampling.pack(sampling.noise(5, HEIGHT, WIDTH))
    img_ids = sampling.image_ids(HEIGHT, WIDTH)
    timesteps = sampling.schedule(STEPS, (HEIGHT // 16) * (WIDTH // 16), shift=True)
    total = len(timesteps) - 1

    def predict(cond: tuple[torch.Tensor, torch.Tensor], t: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        t5, clip = cond
        return transformer(hidden_states=tokens, timestep=t, guidance=torch.full((1,), GUIDANCE),
                           pooled_projections=clip, encoder_hidden_states=t5, txt_ids=torch.zeros(t5.shape[1], 3),
                           img_ids=img_ids, joint_attention_kwargs=kwargs, return_dict=False)[0]

    with torch.no_grad(), ip_adapters_applied(transformer, adapters) as hook:
        for step, (t_curr, t_prev) in enumerate(zip(timesteps[:-1], timesteps[1:])):
            t = torch.full((1,), t_curr)
            prediction = predict(positive, t, hook.kwargs(step, total))
            if cfg != 1.0:
                unconditional = predict(negative, t, hook.kwargs(step, total, negative=True))
                prediction = unconditional + cfg * (prediction - unconditional)
            tokens = tokens + (t_prev - t_curr) * prediction
    return (vae.decode(dev["vae"], sampling.unpack(tokens, HEIGHT, WIDTH)) / 2 + 0.5).clamp(0, 1)


def theirs(dev: dict[str, Any], files: dict[str, Path], image: Any, scale: float, cfg: float = 1.0) -> torch.Tensor:
    """diffusers' FluxPipeline with the XLabs file and CLIP vision folder loaded by ``load_ip_adapter`` (on a copy
    of the transformer: the loader replaces its processors for good)."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**{**dev, "transformer": copy.deepcopy(dev["transformer"])}, image_encoder=None,
                        feature_extractor=None)
    pipe.load_ip_adapter(str(files["adapter"].parent), weight_name=files["adapter"].name,
                         image_encoder_pretrained_model_name_or_path=str(files["encoder"]),
                         image_encoder_dtype=torch.float32)
    pipe.set_ip_adapter_scale(scale)
    extra: dict[str, Any] = {"negative_prompt": NEGATIVE, "true_cfg_scale": cfg} if cfg != 1.0 else {}
    return pipe(prompt=PROMPT, ip_adapter_image=image, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS,
                guidance_scale=GUIDANCE, latents=sampling.pack(sampling.noise(5, HEIGHT, WIDTH)),
                generator=torch.Generator().manual_seed(0), output_type="pt", **extra).images


def adapter_for(loaded: dict[str, Any], image: Any, **settings: Any) -> FluxIPAdapter:
    return prepare(loaded["adapter"], loaded["encoder"], image, **settings)


@pytest.mark.parametrize("scale, cfg", [(1.0, 1.0), (0.6, 2.5)])
def test_ip_adapter_gives_flux_pipelines_image(dev: dict[str, Any], files: dict[str, Path], loaded: dict[str, Any],
                                               scale: float, cfg: float) -> None:
    image = picture()
    reference = theirs(dev, files, image, scale, cfg)
    mine = ours(dev, [adapter_for(loaded, image, weight=scale)], cfg)
    difference = (mine - reference).abs().max().item()
    assert difference < TOLERANCE, f"differs from FluxPipeline's IP-Adapter image by {difference:.2e}"


def test_the_image_prompt_and_its_weight_move_the_image(dev: dict[str, Any], loaded: dict[str, Any]) -> None:
    plain = ours(dev, [])
    weighted = ours(dev, [adapter_for(loaded, picture())])
    assert (weighted - plain).abs().max().item() > 100 * TOLERANCE
    assert torch.allclose(ours(dev, [adapter_for(loaded, picture(), weight=0.0)]), plain, atol=1e-6)
    other = ours(dev, [adapter_for(loaded, picture(seed=9))])
    assert (other - weighted).abs().max().item() > 10 * TOLERANCE  # another image prompt, another picture
    both = ours(dev, [adapter_for(loaded, picture()), adapter_for(loaded, picture(seed=9), weight=0.5)])
    assert (both - weighted).abs().max().item() > 10 * TOLERANCE  # several adapters add up


def test_embeddings_are_clip_image_embeds_of_the_image_and_a_black_one(loaded: dict[str, Any]) -> None:
    from PIL import Image
    from transformers import CLIPImageProcessor

    encoder, image = loaded["encoder"], picture()
    positive, negative = ip_adapter_embeds(encoder, image)
    with torch.no_grad():
        pixels = CLIPImageProcessor()(images=[image], return_tensors="pt").pixel_values
        assert torch.equal(positive, encoder(pixels).image_embeds) and positive.shape == (1, 768)
        black = CLIPImageProcessor()(images=[Image.new("RGB", (7, 5))], return_tensors="pt").pixel_values
        assert torch.allclose(negative, encoder(black).image_embeds, atol=1e-6)


def test_the_transformer_is_as_before_after_the_block(dev: dict[str, Any], loaded: dict[str, Any]) -> None:
    transformer = dev["transformer"]
    processors = dict(transformer.attn_processors)
    state = {k: v.clone() for k, v in transformer.state_dict().items()}
    before = ours(dev, [])
    adapter = adapter_for(loaded, picture())
    with ip_adapters_applied(transformer, [adapter]) as hook:
        assert type(transformer.transformer_blocks[0].attn.processor).__name__ == "FluxIPAdapterAttnProcessor"
        assert type(transformer.single_transformer_blocks[0].attn.processor).__name__ == "FluxAttnProcessor"
        assert hook.kwargs(0, STEPS)["ip_hidden_states"][0].shape == (1, 4, 4096)
    with pytest.raises(RuntimeError, match="stop"), ip_adapters_applied(transformer, [adapter]):
        raise RuntimeError("stop")
    assert all(transformer.attn_processors[name] is processor for name, processor in processors.items())
    after = transformer.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], v) for k, v in state.items())
    assert torch.equal(ours(dev, []), before)
    assert next(loaded["adapter"].parameters()).dtype == torch.float32  # the caller's adapter is untouched


def test_weights_and_step_range_follow_invokeai(dev: dict[str, Any], loaded: dict[str, Any]) -> None:
    def weights(adapter: FluxIPAdapter, total: int) -> list[float]:
        return [adapter.weight_at(step, total) for step in range(total)]

    base = dict(adapter=None, image_embeds=None, negative_image_embeds=None)
    assert weights(FluxIPAdapter(**base, weight=0.8), 4) == [0.8] * 4
    # floor(begin * steps) .. ceil(end * steps), inclusive: 0.3 of 10 is 3, 0.61 of 10 is 7
    assert weights(FluxIPAdapter(**base, begin_step_percent=0.3, end_step_percent=0.61), 10) == \
        [0.0] * 3 + [1.0] * 5 + [0.0] * 2
    assert weights(FluxIPAdapter(**base, weight=[0.1, 0.2, 0.3], end_step_percent=0.0), 3) == [0.1, 0.0, 0.0]
    with pytest.raises(FluxIPAdapterError, match="2 given, none for step 2 of 3"):
        weights(FluxIPAdapter(**base, weight=[0.1, 0.2]), 3)

    image = picture()
    listed = adapter_for(loaded, image, weight=[1.0, 0.0, 0.0])
    ranged = adapter_for(loaded, image, weight=1.0, end_step_percent=0.0)  # steps 0..ceil(0) = step 0 only
    assert torch.equal(ours(dev, [listed]), ours(dev, [ranged]))
    late = adapter_for(loaded, image, begin_step_percent=1.0)  # floor(3) = 3: after the last step
    assert torch.allclose(ours(dev, [late]), ours(dev, []), atol=1e-6)
    negative = adapter_for(loaded, image, weight=-0.5)  # InvokeAI skips weights under 1e-6, negative ones too
    assert torch.allclose(ours(dev, [negative]), ours(dev, []), atol=1e-6)

    with ip_adapters_applied(dev["transformer"], [listed, negative]) as hook:
        hook.kwargs(0, STEPS, negative=True)
        assert dev["transformer"].transformer_blocks[0].attn.processor.scale == [1.0, 0.0]
        positive, black = hook.kwargs(1, STEPS), hook.kwargs(1, STEPS, negative=True)
        assert dev["transformer"].transformer_blocks[0].attn.processor.scale == [0.0, 0.0]
        assert not torch.equal(positive["ip_hidden_states"][0], black["ip_hidden_states"][0])
    with ip_adapters_applied(dev["transformer"], []) as hook:
        assert hook.kwargs(0, STEPS) == {}


def test_adapters_and_encoders_that_do_not_fit_are_refused(dev: dict[str, Any], loaded: dict[str, Any],
                                                          tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = flux_ip_adapter_state(seed=1)
    deeper = {**state, **{k.replace("double_blocks.0.", "double_blocks.1."): v.clone() for k, v in state.items()
                          if k.startswith("double_blocks.0.")}}
    save_file(deeper, str(tmp_path / "deeper.safetensors"))
    adapter = adapter_for({**loaded, "adapter": load_ip_adapter(tmp_path / "deeper.safetensors", torch.float32)},
                          picture())
    with pytest.raises(FluxIPAdapterError, match="made for 2 double blocks of width 32 with 4096-wide context; this "
                                                 "transformer has 1 of width 32"):
        with ip_adapters_applied(dev["transformer"], [adapter]):
            pass
    assert type(dev["transformer"].transformer_blocks[0].attn.processor).__name__ == "FluxAttnProcessor"
    save_file({**state, "extra.weight": torch.zeros(1)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(FluxIPAdapterError, match="unexpected tensors for an XLabs IP-Adapter: extra.weight"):
        load_ip_adapter(tmp_path / "extra.safetensors", torch.float32)
    narrow = {**state, "ip_adapter_proj_model.proj.weight": torch.zeros(4 * 4096, 32)}
    save_file(narrow, str(tmp_path / "narrow.safetensors"))
    with pytest.raises(FluxIPAdapterError, match="gives 768-wide embeddings; the IP-Adapter takes 32"):
        prepare(load_ip_adapter(tmp_path / "narrow.safetensors", torch.float32), loaded["encoder"], picture())
    with pytest.raises(FluxIPAdapterError, match=r"only supports a single image prompt \(received 2\)"):
        single_image(["a", "b"])
    assert single_image(["a"]) == single_image("a") == "a"


def test_the_clip_vision_model_is_invokeais_by_name_else_the_only_one() -> None:
    from types import SimpleNamespace

    from invokeai_provider.core.taxonomy import ModelType

    def model(name: str, kind: ModelType = ModelType.CLIPVision) -> Any:
        return SimpleNamespace(name=name, type=kind)

    with pytest.raises(ClipVisionError, match="ViT-L image encoder: no clip_vision model is installed, and it cannot "
                                              "be downloaded here; install InvokeAI/clip-vit-large-patch14 as "
                                              "'clip-vit-large-patch14'"):
        find_clip_vision([model("clip", ModelType.CLIPEmbed)])
    assert find_clip_vision([model("mine"), model("ipa", ModelType.IPAdapter)]).name == "mine"
    assert find_clip_vision([model("a"), model("clip-vit-large-patch14"), model("b")]).name == \
        "clip-vit-large-patch14"
    with pytest.raises(ClipVisionError, match=r"several clip_vision models are installed \(a, b\)"):
        find_clip_vision([model("b"), model("a")])


def installed(tmp_path: Path, source: Path, name: str) -> tuple[Any, Any]:
    from invokeai_provider.core.fields import ModelIdentifierField
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    registry = ModelRegistry((tmp_path / "root").as_uri())
    config = install_model(registry, str(source), name=name)
    return ModelManager(registry, device="cpu"), ModelIdentifierField.model_validate(config.identifier())


def test_clip_vision_folders_and_xlabs_files_are_probed_installed_and_loaded(files: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    import json

    from invokeai_provider.models.model_manager.probe import probe

    found = probe(files["encoder"])
    assert (found.type.value, found.format.value, found.base.value) == ("clip_vision", "diffusers", "any")
    assert json.loads((files["encoder"] / "config.json").read_text())["architectures"] == [
        "CLIPVisionModelWithProjection"]
    found = probe(files["adapter"])
    assert (found.type.value, found.format.value, found.base.value) == ("ip_adapter", "checkpoint", "flux")

    manager, encoder_id = installed(tmp_path / "a", files["encoder"], "clip-vit-large-patch14")
    with manager.load(encoder_id) as encoder:
        assert type(encoder).__name__ == "CLIPVisionModelWithProjection" and encoder.dtype == torch.float32
        assert encoder.config.projection_dim == 768 and encoder.config.patch_size == 14
    manager, adapter_id = installed(tmp_path / "b", files["adapter"], "xlabs")
    with manager.load(adapter_id) as adapter:
        state = flux_ip_adapter_state(seed=5)
        assert torch.equal(adapter["image_proj"].image_embeds.weight, state["ip_adapter_proj_model.proj.weight"])
        assert torch.equal(adapter["to_v_ip"][0].bias,
                           state["double_blocks.0.processor.ip_adapter_double_stream_v_proj.bias"])
        assert adapter["image_proj"].num_image_text_embeds == 4 and len(adapter["to_k_ip"]) == 1


def test_a_clip_model_folder_is_clip_vision_only_without_a_tokenizer(tmp_path: Path) -> None:
    from transformers import CLIPConfig, CLIPModel

    from invokeai_provider.models.model_manager.probe import probe

    config = CLIPConfig(text_config={"hidden_size": 768, "intermediate_size": 32, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "vocab_size": 64, "max_position_embeddings": 8},
                        vision_config={"hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
                        projection_dim=16)
    whole = CLIPModel(config)
    whole.save_pretrained(tmp_path / "clip")
    found = probe(tmp_path / "clip")
    assert (found.type.value, found.base.value) == ("clip_vision", "any")
    encoder = load_clip_vision(tmp_path / "clip", torch.float32)  # its vision tower and projection
    assert type(encoder).__name__ == "CLIPVisionModelWithProjection" and encoder.config.projection_dim == 16
    assert torch.equal(encoder.visual_projection.weight, whole.visual_projection.weight)


def test_install_tiny_builds_both(tmp_path: Path) -> None:
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_install import install_tiny

    registry = ModelRegistry(tmp_path.as_uri())
    encoder = install_tiny(registry, "clip_vision").config
    adapter = install_tiny(registry, "ip_adapter", "flux").config
    assert (encoder.name, encoder.type.value, encoder.base.value) == ("tiny-flux-clip_vision", "clip_vision", "any")
    assert (adapter.name, adapter.type.value, adapter.base.value) == ("tiny-flux-ip_adapter", "ip_adapter", "flux")
