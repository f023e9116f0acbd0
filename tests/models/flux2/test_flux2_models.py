"""FLUX.2 models probed and loaded with InvokeAI's rules: Flux2KleinPipeline folders (variant from the context width,
Base by name), BFL single-file transformers (bare or bundled) loading to the folder's transformer, FLUX.2 VAEs as
folders and BFL files (batch norm included), diffusers-named FLUX.2 LoRAs told from FLUX.1's; [dev] by its context
width; GGUF FLUX.2 identified and installed."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

from invokeai_provider.core.fields import ModelIdentifierField
from invokeai_provider.core.taxonomy import BaseModelType, Flux2VariantType, ModelType, SubModelType
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.probe import ProbeError, probe
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux import build_flux_lora
from invokeai_provider.models.testing.tiny_flux2 import (
    build_flux2_checkpoint,
    build_flux2_lora,
    build_flux2_model,
    build_flux2_vae,
)

SEED = 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_flux2_model(tmp_path_factory.mktemp("flux2") / "klein", seed=SEED)


def test_a_klein_folder_probes_with_its_variant(folder: Path, tmp_path: Path) -> None:
    found = probe(folder)
    assert (found.type, found.format, found.base, found.variant) == (
        ModelType.Main, ModelFormat.Diffusers, BaseModelType.Flux2, Flux2VariantType.Klein4B)
    base = shutil.copytree(folder, tmp_path / "FLUX.2-klein-base-9B")
    config = json.loads((base / "transformer" / "config.json").read_text())
    (base / "transformer" / "config.json").write_text(json.dumps({**config, "joint_attention_dim": 12288}))
    assert probe(base).variant is Flux2VariantType.Klein9BBase  # 3 x Qwen3-8B, "base" in the name
    (base / "transformer" / "config.json").write_text(json.dumps({**config, "joint_attention_dim": 15360}))
    assert probe(base).variant is Flux2VariantType.Dev  # 3 x Mistral Small 3's 5,120; [dev] has no Base


def test_bfl_single_files_load_as_the_folders_transformer(folder: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path.as_uri())
    manager = ModelManager(registry, device="cpu")
    main = install_model(registry, str(folder), name="klein", inplace=True)
    with manager.load(ModelIdentifierField(**main.identifier(SubModelType.Transformer))) as expected:
        reference = {k: v.clone() for k, v in expected.state_dict().items()}
    for name, prefix in (("klein-4b.safetensors", ""), ("klein-base-4b.safetensors", "model.diffusion_model.")):
        path = build_flux2_checkpoint(tmp_path / name, seed=SEED, prefix=prefix)
        found = probe(path)
        assert (found.type, found.format, found.base) == (ModelType.Main, ModelFormat.Checkpoint, BaseModelType.Flux2)
        assert found.variant is (Flux2VariantType.Klein4BBase if "base" in name else Flux2VariantType.Klein4B)
        config = install_model(registry, str(path), name=name, inplace=True)
        with manager.load(ModelIdentifierField(**config.identifier(SubModelType.Transformer))) as transformer:
            state = transformer.state_dict()
        assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)
        with pytest.raises(Exception, match=r"single-file FLUX.2 transformer .* its Qwen3 encoder and VAE are separate"):
            with manager.load(ModelIdentifierField(**config.identifier(SubModelType.VAE))):
                pass


def test_flux2_vaes_probe_and_load_with_their_batch_norm(folder: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path.as_uri())
    manager = ModelManager(registry, device="cpu")
    main = install_model(registry, str(folder), name="klein", inplace=True)
    with manager.load(ModelIdentifierField(**main.identifier(SubModelType.VAE))) as vae:
        expected = {k: v.clone() for k, v in vae.state_dict().items()}
    assert expected["bn.running_var"].std() > 0  # the tiny VAE's statistics are not the identity's
    for path in (build_flux2_vae(tmp_path / "ae.safetensors", seed=SEED), build_flux2_vae(tmp_path / "vae", seed=SEED)):
        found = probe(path)
        assert (found.type, found.base) == (ModelType.VAE, BaseModelType.Flux2)
        config = install_model(registry, str(path), name=path.name, inplace=True)
        with manager.load(ModelIdentifierField(**config.identifier())) as loaded:
            state = loaded.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items() if not k.endswith("num_batches_tracked"))


def test_flux2_loras_are_told_from_flux1_loras(tmp_path: Path) -> None:
    found = probe(build_flux2_lora(tmp_path / "klein-style.safetensors", seed=SEED))
    assert (found.type, found.base) == (ModelType.LoRA, BaseModelType.Flux2)
    assert probe(build_flux_lora(tmp_path / "flux1.safetensors", style="diffusers")).base is BaseModelType.Flux


def _gguf(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    """A GGUF header (no data) naming ``tensors`` with torch-order shapes."""
    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    body = b"GGUF" + struct.pack("<I", 3) + struct.pack("<QQ", len(tensors), 0)
    for name, shape in tensors.items():
        body += string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *reversed(shape))
        body += struct.pack("<IQ", 0, 0)
    path.write_bytes(body)
    return path


def test_a_gguf_flux2_transformer_is_identified_and_installed(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "flux-2-klein-4b-Q8_0.gguf", {"double_blocks.0.img_attn.norm.key_norm.scale": (128,),
                                                          "img_in.weight": (3072, 128), "txt_in.weight": (3072, 7680)})
    found = probe(path)
    assert (found.format, found.base, found.variant) == (ModelFormat.GGUFQuantized, BaseModelType.Flux2,
                                                         Flux2VariantType.Klein4B)
    installed = install_model(ModelRegistry(tmp_path.as_uri()), str(path), name="q8", inplace=True)
    assert (installed.format, installed.base) == (ModelFormat.GGUFQuantized, BaseModelType.Flux2)


def test_the_qwen3_encoder_text_encoding_reads_layers_9_18_and_27(folder: Path) -> None:
    """The stored embeddings are Qwen3's hidden states 9, 18 and 27 side by side (what Flux2KleinPipeline stacks)."""
    from diffusers import Flux2KleinPipeline

    from invokeai_provider.models.flux2.text_encoding import encode_klein

    pipe: Any = Flux2KleinPipeline.from_pretrained(folder, local_files_only=True)
    ours = encode_klein(pipe.tokenizer, pipe.text_encoder, "a red fox", 256)
    theirs = pipe._get_qwen3_prompt_embeds(pipe.text_encoder, pipe.tokenizer, "a red fox", max_sequence_length=256)
    assert ours.embeds.shape == (1, 256, 3 * 2560) and torch.allclose(ours.embeds, theirs, atol=1e-5)
    other = pipe._get_qwen3_prompt_embeds(pipe.text_encoder, pipe.tokenizer, "a red fox", max_sequence_length=256,
                                          hidden_states_layers=(8, 18, 27))
    assert not torch.allclose(ours.embeds, other, atol=1e-3)  # teeth: another layer is another embedding
