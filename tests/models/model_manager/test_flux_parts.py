"""The models a FLUX.1 user installs beside the transformer, through the model manager: T5 encoder and CLIP embed
folders (base any) and FLUX VAEs (BFL single file, diffusers folder) probed as InvokeAI probes them, installed, and
loaded submodel by submodel with the tiny main's own weights; bitsandbytes files identified and refused, at install
and at load, with what they would need; GGUF T5 encoders and FLUX.1 transformers identified and installed."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from invokeai_provider.core.fields import ModelIdentifierField
from invokeai_provider.core.taxonomy import BaseModelType, ClipVariantType, FluxVariantType, ModelType, SubModelType
from invokeai_provider.models.model_manager.configs import ModelConfig, ModelFormat
from invokeai_provider.models.model_manager.install import InstallError, install_model
from invokeai_provider.models.model_manager.manager import ModelLoadError, ModelManager
from invokeai_provider.models.model_manager.probe import ProbeError, probe
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux import build_flux_model
from invokeai_provider.models.testing.tiny_flux_parts import (
    build_clip_embed,
    build_flux_vae,
    build_t5_encoder,
    flux_vae_state_dict,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEED = 5


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flux-parts")
    return {"main": build_flux_model(root / "main", variant="dev", seed=SEED),
            "t5": build_t5_encoder(root / "t5", seed=SEED), "clip": build_clip_embed(root / "clip", seed=SEED),
            "ae": build_flux_vae(root / "ae.safetensors", seed=SEED),
            "vae": build_flux_vae(root / "flux-vae-folder", seed=SEED)}


@pytest.fixture(scope="module")
def installed(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManager, dict]:
    registry = ModelRegistry(tmp_path_factory.mktemp("root").as_uri())
    configs = {name: install_model(registry, str(path), name=name, inplace=True) for name, path in built.items()}
    return ModelManager(registry), configs


def state_of(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- probing ----------------------------------------------------------------------------------------------------


def test_a_t5_encoder_folder_probes_as_invokeais(built: dict[str, Path], tmp_path: Path) -> None:
    t5 = built["t5"]
    assert (t5 / "text_encoder_2" / "model.safetensors.index.json").is_file()  # sharded, as the real one
    found = probe(t5)
    assert (found.type, found.format, found.base, found.variant) == (
        ModelType.T5Encoder, ModelFormat.T5Encoder, BaseModelType.Any, None)
    single = shutil.copytree(t5, tmp_path / "single")  # one unsharded file loads just as well
    for shard in (single / "text_encoder_2").glob("model*.safetensors*"):
        shard.unlink()
    with pytest.raises(ProbeError, match="no model.safetensors.index.json or model.safetensors"):
        probe(single)
    save_file({"shared.weight": torch.zeros(2, 2)}, str(single / "text_encoder_2" / "model.safetensors"))
    assert probe(single).format is ModelFormat.T5Encoder
    shutil.rmtree(single / "tokenizer_2")
    with pytest.raises(ProbeError, match="needs its tokenizer in tokenizer_2/"):
        probe(single)


def test_a_clip_embed_probes_with_its_variant_in_either_layout(built: dict[str, Path], tmp_path: Path) -> None:
    found = probe(built["clip"])
    assert (found.type, found.format, found.base, found.variant) == (
        ModelType.CLIPEmbed, ModelFormat.Diffusers, BaseModelType.Any, ClipVariantType.L)
    flat = tmp_path / "flat"  # encoder and tokenizer files in one folder
    shutil.copytree(built["clip"] / "text_encoder", flat)
    for item in (built["clip"] / "tokenizer").iterdir():
        shutil.copy(item, flat / item.name)
    assert probe(flat).variant is ClipVariantType.L
    config = json.loads((flat / "config.json").read_text())
    (flat / "config.json").write_text(json.dumps({**config, "hidden_size": 1280}))
    assert probe(flat).variant is ClipVariantType.G
    (flat / "config.json").write_text(json.dumps({**config, "hidden_size": 1024}))
    with pytest.raises(ProbeError, match="hidden_size 1024 is neither CLIP-L's"):
        probe(flat)
    (flat / "config.json").write_text(json.dumps(config))
    for name in ("vocab.json", "tokenizer.json", "tokenizer_config.json"):
        (flat / name).unlink(missing_ok=True)
    with pytest.raises(ProbeError, match="needs its tokenizer"):
        probe(flat)


def test_flux_vaes_probe_as_flux_by_their_latent_channels(built: dict[str, Path], tmp_path: Path) -> None:
    for name in ("ae", "vae"):
        found = probe(built[name])
        assert (found.type, found.base) == (ModelType.VAE, BaseModelType.Flux), name
    assert probe(built["ae"]).format is ModelFormat.Checkpoint and probe(built["vae"]).format is ModelFormat.Diffusers
    keys = flux_vae_state_dict(SEED)
    assert keys["encoder.mid.attn_1.q.weight"].dim() == 4 and "decoder.up.3.upsample.conv.weight" in keys  # BFL's

    def vae_file(name: str, latent: int) -> Path:
        path = tmp_path / name
        save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3), "decoder.conv_in.weight":
                   torch.zeros(8, latent, 3, 3), "decoder.conv_out.weight": torch.zeros(3, 8, 3, 3)}, str(path))
        return path

    assert probe(vae_file("sdxl-vae.safetensors", 4)).base is BaseModelType.StableDiffusionXL  # 4: by its name
    assert probe(vae_file("anything.safetensors", 16)).base is BaseModelType.Flux
    flux2 = probe(vae_file("flux2-ae.safetensors", 32))  # 32 latent channels: FLUX.2's VAE (models.flux2.probe)
    assert (flux2.type, flux2.base) == (ModelType.VAE, BaseModelType.Flux2)


# --- GGUF (identified, installed) and bitsandbytes (identified, then refused) ------------------------------------


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def write_gguf(path: Path, tensors: dict[str, tuple[int, ...]], qtype: int = 8) -> Path:
    """A GGUF v3 file: a string and a string-array metadata entry, then the tensor infos (Q8_0 by default) and
    zero data; the probe reads only the header."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 2))
    out += _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("t5encoder")
    out += _gguf_string("general.tags") + struct.pack("<IIQ", 9, 8, 2) + _gguf_string("a") + _gguf_string("b")
    for index, (name, shape) in enumerate(tensors.items()):
        out += _gguf_string(name) + struct.pack(f"<I{len(shape)}Q", len(shape), *reversed(shape))
        out += struct.pack("<IQ", qtype, 64 * index)
    path.write_bytes(bytes(out) + bytes(64 * len(tensors)))
    return path


FLUX_GGUF = {"double_blocks.0.img_attn.norm.key_norm.scale": (128,), "img_in.weight": (3072, 64),
             "txt_in.weight": (3072, 4096)}


def test_gguf_files_are_identified_from_their_header(tmp_path: Path) -> None:
    t5 = probe(write_gguf(tmp_path / "t5-v1_1-xxl-encoder-Q8_0.gguf", {"enc.blk.0.attn_q.weight": (4096, 4096),
                                                                       "token_embd.weight": (32128, 4096)}))
    assert (t5.type, t5.format, t5.base) == (ModelType.T5Encoder, ModelFormat.GGUFQuantized, BaseModelType.Any)
    schnell = probe(write_gguf(tmp_path / "schnell.gguf", FLUX_GGUF))
    assert (schnell.type, schnell.format, schnell.base, schnell.variant) == (
        ModelType.Main, ModelFormat.GGUFQuantized, BaseModelType.Flux, FluxVariantType.Schnell)
    dev = {**FLUX_GGUF, "guidance_in.out_layer.weight": (3072, 3072)}
    assert probe(write_gguf(tmp_path / "dev.gguf", dev)).variant is FluxVariantType.Dev
    fill = {**dev, "img_in.weight": (3072, 384)}
    assert probe(write_gguf(tmp_path / "fill.gguf", fill)).variant is FluxVariantType.DevFill
    flux2 = probe(write_gguf(tmp_path / "flux2.gguf", {**FLUX_GGUF, "txt_in.weight": (3072, 15360)}))
    assert (flux2.format, flux2.base) == (ModelFormat.GGUFQuantized, BaseModelType.Flux2)
    with pytest.raises(ProbeError, match=r"neither a T5 encoder .* it has 1 tensors \(blk.0.attn_q.weight"):
        probe(write_gguf(tmp_path / "qwen3.gguf", {"blk.0.attn_q.weight": (8, 8)}))
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes((tmp_path / "dev.gguf").read_bytes()[:60])
    with pytest.raises(ProbeError, match="truncated or damaged GGUF header"):
        probe(damaged)
    (tmp_path / "not.gguf").write_bytes(b"GGML" + bytes(30))
    with pytest.raises(ProbeError, match="not a GGUF file"):
        probe(tmp_path / "not.gguf")


def bnb_t5_folder(built: dict[str, Path], dest: Path) -> Path:
    """InvokeAI's LLM.int8 T5 layout: text_encoder_2/bnb_llm_int8_model.safetensors with int8 weights and SCB scales."""
    shutil.copytree(built["t5"] / "tokenizer_2", dest / "tokenizer_2")
    (dest / "text_encoder_2").mkdir()
    shutil.copy(built["t5"] / "text_encoder_2" / "config.json", dest / "text_encoder_2" / "config.json")
    save_file({"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(32, 4096, dtype=torch.int8),
               "encoder.block.0.layer.0.SelfAttention.q.SCB": torch.ones(32)},
              str(dest / "text_encoder_2" / "bnb_llm_int8_model.safetensors"))
    return dest


def test_bnb_encoders_are_refused_at_install_with_what_they_need_and_gguf_files_install(
        built: dict[str, Path], tmp_path: Path) -> None:
    bnb = bnb_t5_folder(built, tmp_path / "t5-int8")
    found = probe(bnb)
    assert (found.type, found.format, found.base) == (ModelType.T5Encoder, ModelFormat.BnbQuantizedLlmInt8b,
                                                      BaseModelType.Any)
    registry = ModelRegistry((tmp_path / "root").as_uri())
    with pytest.raises(InstallError) as refused:
        install_model(registry, str(bnb), name="t5-int8")
    message = str(refused.value)
    assert str(bnb) in message and "bitsandbytes LLM.int8-quantized T5 encoder" in message
    assert "bitsandbytes package (not installed here)" in message and "a CUDA GPU (none here)" in message
    assert "install the unquantized T5 encoder instead" in message
    assert list(registry.all()) == [] and not (tmp_path / "root" / "files").exists()
    # GGUF T5 encoders and FLUX.1 transformers install (they load: tests/models/quantization/test_gguf.py)
    for name, kind in (("t5-Q8_0.gguf", ModelType.T5Encoder), ("flux1-dev-Q4.gguf", ModelType.Main)):
        tensors = {"enc.blk.0.attn_q.weight": (8, 8)} if name.startswith("t5") else FLUX_GGUF
        installed = install_model(registry, str(write_gguf(tmp_path / name, tensors)))
        assert (installed.type, installed.format) == (kind, ModelFormat.GGUFQuantized)


def test_a_quantized_record_is_refused_at_load_before_its_files_are_read(tmp_path: Path) -> None:
    """A record registered elsewhere (or by hand) still never reaches a loader that cannot run it."""
    registry = ModelRegistry((tmp_path / "root").as_uri())
    config = registry.add(ModelConfig(key="k-int8", hash="blake3:00", path=str(tmp_path / "missing"), file_size=1,
                                      name="t5-int8", source="x", type=ModelType.T5Encoder,
                                      format=ModelFormat.BnbQuantizedLlmInt8b, base=BaseModelType.Any))
    with pytest.raises(ModelLoadError, match="model 't5-int8' \\(k-int8\\): a bitsandbytes LLM.int8"):
        with ModelManager(registry, device="cpu").load(ModelIdentifierField(**config.identifier()),
                                                       SubModelType.TextEncoder2):
            pass


# --- installing and loading ------------------------------------------------------------------------------------


def test_the_installed_parts_are_recorded_with_invokeais_taxonomy(installed: tuple[ModelManager, dict]) -> None:
    manager, configs = installed
    found = {name: (c.type.value, c.format.value, c.base.value, getattr(c.variant, "value", None))
             for name, c in configs.items() if name != "main"}
    assert found == {"t5": ("t5_encoder", "t5_encoder", "any", None), "clip": ("clip_embed", "diffusers", "any", "large"),
                     "ae": ("vae", "checkpoint", "flux", None), "vae": ("vae", "diffusers", "flux", None)}
    again = ModelRegistry(manager.registry.location).find("clip")  # the variant survives the JSON record
    assert again.variant is ClipVariantType.L


def test_the_parts_load_as_the_tiny_mains_own(installed: tuple[ModelManager, dict]) -> None:
    manager, configs = installed
    main = configs["main"].identifier()

    def load(identifier: dict, part: SubModelType) -> Any:
        with manager.load(ModelIdentifierField(**identifier), part) as model:
            return model

    def same_tensors(a: Any, b: Any) -> bool:
        left, right = state_of(a), state_of(b)
        return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)

    t5 = configs["t5"].identifier()
    encoder, tokenizer = load(t5, SubModelType.TextEncoder2), load(t5, SubModelType.Tokenizer2)
    assert type(encoder).__name__ == "T5EncoderModel" and type(tokenizer).__name__.startswith("T5Tokenizer")
    assert same_tensors(encoder, load(main, SubModelType.TextEncoder2))
    prompt = "a red fox in the snow, oil painting"
    assert tokenizer(prompt).input_ids == load(main, SubModelType.Tokenizer2)(prompt).input_ids
    assert same_tensors(load(t5, SubModelType.TextEncoder3), encoder)  # SD3's slot reads the same encoder

    clip = configs["clip"].identifier()
    clip_encoder = load(clip, SubModelType.TextEncoder)
    assert type(clip_encoder).__name__ == "CLIPTextModel" and same_tensors(clip_encoder,
                                                                           load(main, SubModelType.TextEncoder))
    assert load(clip, SubModelType.Tokenizer)(prompt).input_ids == load(main, SubModelType.Tokenizer)(prompt).input_ids

    main_vae = load(main, SubModelType.VAE)
    for name in ("ae", "vae"):
        vae = load(configs[name].identifier(), SubModelType.VAE)
        assert type(vae).__name__ == "AutoencoderKL" and same_tensors(vae, main_vae), name
        assert (vae.config.latent_channels, vae.config.scaling_factor, vae.config.shift_factor) == (16, 0.3611, 0.1159)
        assert list(vae.config.block_out_channels) == list(main_vae.config.block_out_channels)


def test_a_part_that_is_not_there_is_refused_by_name(installed: tuple[ModelManager, dict]) -> None:
    manager, configs = installed
    with pytest.raises(ModelLoadError, match="'t5' is a t5_encoder model: submodel 'vae' does not exist in it "
                                             r"\(expected one of tokenizer_2, tokenizer_3, text_encoder_2"):
        with manager.load(ModelIdentifierField(**configs["t5"].identifier()), SubModelType.VAE):
            pass
    with pytest.raises(ModelLoadError, match="'clip' is a clip_embed model: submodel 'None' does not exist"):
        with manager.load(ModelIdentifierField(**configs["clip"].identifier())):
            pass


def test_preloading_an_encoder_loads_its_tokenizer_and_encoder(installed: tuple[ModelManager, dict]) -> None:
    manager, configs = installed
    keys = manager.preload(configs["t5"].key)
    assert [key.rsplit(":", 1)[1] for key in keys] == ["tokenizer_2", "text_encoder_2"]
    assert [key.rsplit(":", 1)[1] for key in manager.preload("clip")] == ["tokenizer", "text_encoder"]
    assert [key.rsplit(":", 1)[1] for key in manager.preload("ae")] == ["model"]
