"""FLUX.2 [dev] models with InvokeAI's rules: the tiny [dev] main (a Flux2Pipeline folder) and Mistral encoder install
through ``install-tiny`` and probe as InvokeAI records them; the standalone encoder is the main's own; Mistral Small 3
geometry decides what is a Mistral encoder (width, depth, Tekken's vocabulary for a single file); BFL's [dev]
transformer file (with its guidance embedder) loads to the folder's transformer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from invokeai_provider.core.fields import ModelIdentifierField
from invokeai_provider.core.taxonomy import BaseModelType, Flux2VariantType, MistralVariantType, ModelType, SubModelType
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.probe import ProbeError, probe
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux2 import build_flux2_checkpoint
from invokeai_provider.models.testing.tiny_install import install_tiny
from invokeai_provider.models.text_encoders.mistral import probe_mistral_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("flux2-dev-models")
    registry = ModelRegistry(root.as_uri())
    main = install_tiny(registry, "main", "flux2", variant="dev").config
    encoder = install_tiny(registry, "mistral_encoder").config
    return {"registry": registry, "manager": ModelManager(registry, device="cpu"), "main": main, "encoder": encoder,
            "root": root}


def part(config: Any, which: SubModelType) -> ModelIdentifierField:
    return ModelIdentifierField(**config.identifier(which))


def test_install_tiny_gives_a_dev_main_and_its_mistral_encoder(installed: dict[str, Any]) -> None:
    main, encoder = installed["main"], installed["encoder"]
    assert (main.name, main.type, main.format, main.base, main.variant) == (
        "tiny-flux2-dev", ModelType.Main, ModelFormat.Diffusers, BaseModelType.Flux2, Flux2VariantType.Dev)
    assert (encoder.name, encoder.type, encoder.format, encoder.base, encoder.variant) == (
        "tiny-flux2-dev-mistral_encoder", ModelType.MistralEncoder, ModelFormat.MistralEncoder, BaseModelType.Any,
        MistralVariantType.Mistral24B)
    with pytest.raises(ValueError, match=r"no tiny main model of variant 'schnell'.*main --base flux2 --variant dev"):
        install_tiny(installed["registry"], "main", "flux2", variant="schnell")


def test_the_standalone_encoder_is_the_mains_and_reads_like_it(installed: dict[str, Any]) -> None:
    manager = installed["manager"]
    with manager.load(part(installed["main"], SubModelType.TextEncoder)) as ours:
        reference = {k: v.clone() for k, v in ours.state_dict().items()}
    with manager.load(part(installed["encoder"], SubModelType.TextEncoder)) as standalone:
        state = standalone.state_dict()
        assert type(standalone).__name__ == "Mistral3ForConditionalGeneration"
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)
    for config in (installed["main"], installed["encoder"]):  # the Pixtral-processor folder is read as its tokenizer
        with manager.load(part(config, SubModelType.Tokenizer)) as tokenizer:
            assert tokenizer.padding_side == "left" and "[SYSTEM_PROMPT]" in tokenizer.get_vocab()
    with pytest.raises(Exception, match=r"submodel 'vae' does not exist in a mistral_encoder model"):
        with manager.load(part(installed["encoder"], SubModelType.VAE)):
            pass


def test_mistral_geometry_decides_the_variant(installed: dict[str, Any], tmp_path: Path) -> None:
    folder = shutil.copytree(installed["root"] / "tiny" / "tiny-flux2-dev-mistral_encoder", tmp_path / "encoder")
    config_file = folder / "text_encoder" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "text_config": {**config["text_config"], "num_hidden_layers": 30}}))
    assert probe(folder).variant is MistralVariantType.Cow  # BFL's 30-layer "cow" distillation
    config_file.write_text(json.dumps({**config, "text_config": {**config["text_config"], "hidden_size": 4096}}))
    with pytest.raises(ProbeError, match=r"4096 wide and 40 layers deep is not a FLUX.2 \[dev\] text encoder"):
        probe(folder)
    shutil.rmtree(folder / "tokenizer")
    config_file.write_text(json.dumps(config))
    with pytest.raises(ProbeError, match=r"needs its tokenizer"):
        probe(folder)


def test_single_files_need_mistral_small_3s_shapes(tmp_path: Path) -> None:
    def shapes(vocab: int, width: int, layers: int, prefix: str = "") -> dict[str, tuple[int, ...]]:
        found = {f"{prefix}model.embed_tokens.weight": (vocab, width)}
        for index in range(layers):
            found[f"{prefix}model.layers.{index}.self_attn.q_proj.weight"] = (4096, width)
        return found

    cow = probe_mistral_file(tmp_path / "cow.safetensors", shapes(131072, 5120, 30, "text_encoder."))
    assert (cow.type, cow.format, cow.base, cow.variant) == (
        ModelType.MistralEncoder, ModelFormat.Checkpoint, BaseModelType.Any, MistralVariantType.Cow)
    assert probe_mistral_file(tmp_path / "m.safetensors", shapes(131072, 5120, 40)).variant is \
        MistralVariantType.Mistral24B
    with pytest.raises(ProbeError, match=r"32000-token vocabulary"):  # Llama-2-13B's geometry, not Mistral's
        probe_mistral_file(tmp_path / "llama.safetensors", shapes(32000, 5120, 40))
    with pytest.raises(ProbeError, match=r"20 layers deep"):
        probe_mistral_file(tmp_path / "short.safetensors", shapes(131072, 5120, 20))
    qwen3 = {**shapes(151936, 2560, 2), "model.layers.0.self_attn.q_norm.weight": (128,)}
    assert probe_mistral_file(tmp_path / "qwen3.safetensors", qwen3) is None


def test_a_bfl_dev_file_loads_as_the_folders_transformer(installed: dict[str, Any], tmp_path: Path) -> None:
    manager, registry = installed["manager"], installed["registry"]
    with manager.load(part(installed["main"], SubModelType.Transformer)) as expected:
        reference = {k: v.clone() for k, v in expected.state_dict().items()}
        assert expected.config.guidance_embeds and expected.config.joint_attention_dim == 15360
    from invokeai_provider.models.testing.tiny_catalog import seed_for

    path = build_flux2_checkpoint(tmp_path / "flux2-dev.safetensors", seed=seed_for("tiny-flux2-dev"), dev=True,
                                  prefix="model.diffusion_model.")
    found = probe(path)
    assert (found.type, found.format, found.base, found.variant) == (
        ModelType.Main, ModelFormat.Checkpoint, BaseModelType.Flux2, Flux2VariantType.Dev)
    config = install_model(registry, str(path), name="dev-file", inplace=True)
    with manager.load(part(config, SubModelType.Transformer)) as transformer:
        state = transformer.state_dict()
    assert any("guidance_embedder" in key for key in state)
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)
    from invokeai_provider.errors import InvokeAIProviderError

    with pytest.raises(InvokeAIProviderError, match=r"only transformer.*Mistral encoder and VAE.*mistral_encoder_model"):
        with manager.load(part(config, SubModelType.TextEncoder)):
            pass
