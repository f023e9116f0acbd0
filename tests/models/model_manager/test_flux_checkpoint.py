"""FLUX.1 mains as Black Forest Labs' single files (flux1-dev.safetensors and kin): probed as InvokeAI probes them
(variant from guidance_in and img_in, keys bare or under model.diffusion_model.), FLUX.2-like, quantized and
garbage files refused with the reason, and the transformer loaded through the manager's cache as diffusers'
FluxTransformer2DModel with the tiny diffusers folder's exact weights; the parts such a main lacks are a clear
error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from invokeai_provider.core.fields import ModelIdentifierField
from invokeai_provider.core.taxonomy import BaseModelType, FluxVariantType, ModelType, SubModelType
from invokeai_provider.models.flux.bfl_transformer import BflTransformerError, to_diffusers
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelLoadError, ModelManager
from invokeai_provider.models.model_manager.probe import ProbeError, probe
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux import _transformer
from invokeai_provider.models.testing.tiny_flux_checkpoint import build_flux_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEED = 7
EXPECTED = {"dev": FluxVariantType.Dev, "schnell": FluxVariantType.Schnell, "fill": FluxVariantType.DevFill}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flux-single-file")
    built = {variant: build_flux_checkpoint(root / f"flux1-{variant}.safetensors", variant=variant, seed=SEED)
             for variant in EXPECTED}
    built["bundled"] = build_flux_checkpoint(root / "bundled.safetensors", variant="schnell", seed=SEED,
                                             prefixed=True)
    return built


def edited(source: Path, dest: Path, **changes: torch.Tensor | None) -> Path:
    """A copy of a BFL file with tensors replaced, added or (None) removed."""
    state = load_file(str(source))
    for key, value in changes.items():
        state.pop(key, None) if value is None else state.__setitem__(key, value)
    save_file(state, str(dest))
    return dest


@pytest.mark.parametrize("variant", list(EXPECTED))
def test_each_variant_probes_as_a_flux_checkpoint_main(files: dict[str, Path], variant: str) -> None:
    found = probe(files[variant])
    assert (found.type, found.format, found.base, found.variant) == (
        ModelType.Main, ModelFormat.Checkpoint, BaseModelType.Flux, EXPECTED[variant])


def test_a_bundled_file_probes_by_its_prefixed_keys(files: dict[str, Path]) -> None:
    assert all(key.startswith("model.diffusion_model.") for key in load_file(str(files["bundled"])))
    found = probe(files["bundled"])
    assert (found.type, found.format, found.base, found.variant) == (
        ModelType.Main, ModelFormat.Checkpoint, BaseModelType.Flux, FluxVariantType.Schnell)


def test_flux2_quantized_and_unloadable_files_are_refused_with_the_reason(files: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    dev = files["dev"]
    width = load_file(str(dev))["img_in.weight"].shape[0]
    cases = {
        "txt_in takes 15360 features; FLUX.1's takes T5-XXL's 4096 \\(FLUX.2 is not supported\\)":
            {"txt_in.weight": torch.zeros(width, 15360)},
        "FLUX.2's single_stream_modulation.lin.weight; FLUX.2 is not supported":
            {"single_stream_modulation.lin.weight": torch.zeros(3 * width, width)},
        "taking 128 input channels; FLUX.1 takes 64": {"img_in.weight": torch.zeros(width, 128)},
        "bitsandbytes NF4-quantized FLUX.1 transformer":
            {"double_blocks.0.img_attn.proj.weight.quant_state.bitsandbytes__nf4": torch.zeros(4, dtype=torch.uint8)},
        "cannot be loaded: not a complete FLUX.1 transformer: no vector_in.in_layer.weight":
            {"vector_in.in_layer.weight": None},
        "attention heads 32 wide": {f"double_blocks.0.{s}_attn.norm.{n}_norm.scale": torch.ones(32)
                                    for s in ("img", "txt") for n in ("query", "key")},
    }
    for i, (reason, changes) in enumerate(cases.items()):
        with pytest.raises(ProbeError, match=reason):
            probe(edited(dev, tmp_path / f"case{i}.safetensors", **changes))
    garbage = tmp_path / "flux1-dev.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ProbeError, match="not a safetensors file"):
        probe(garbage)
    save_file({"blocks.0.weight": torch.zeros(2, 2)}, str(garbage))
    with pytest.raises(ProbeError, match="not a model this provider recognises"):
        probe(garbage)


def test_the_conversion_refuses_tensors_flux1_does_not_have(files: dict[str, Path]) -> None:
    state = {key: value for key, value in load_file(str(files["schnell"])).items()}
    with pytest.raises(BflTransformerError, match="1 tensors that FLUX.1's transformer does not have, such as extra"):
        to_diffusers({**state, "extra.weight": torch.zeros(1)})
    del state["double_blocks.0.img_attn.qkv.weight"]
    with pytest.raises(BflTransformerError, match="no double_blocks.0.img_attn.qkv.weight"):
        to_diffusers(state)


@pytest.fixture(scope="module")
def installed(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManager, dict]:
    registry = ModelRegistry(tmp_path_factory.mktemp("root").as_uri())
    configs = {name: install_model(registry, str(path), name=name, inplace=True) for name, path in files.items()}
    return ModelManager(registry, device="cpu"), configs


@pytest.mark.parametrize("name,variant", [("dev", "dev"), ("fill", "fill"), ("bundled", "schnell")])
def test_the_transformer_loads_with_the_diffusers_folders_weights(
        installed: tuple[ModelManager, dict], name: str, variant: str) -> None:
    manager, configs = installed
    reference = _transformer(variant, SEED)  # what build_flux_model saves for the same seed
    ident = ModelIdentifierField(**{**configs[name].identifier(), "submodel_type": SubModelType.Transformer})
    with manager.load(ident) as model:
        assert type(model).__name__ == "FluxTransformer2DModel" and not model.training
        assert dict(model.config) == dict(reference.config)
        got, want = model.state_dict(), reference.state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
        assert model.dtype == manager.dtype_for(configs[name]) == torch.float32
        first = model
    with manager.load(ident) as again:  # from the RAM cache, not read again
        assert again is first
    assert manager.cache_key(configs[name], SubModelType.Transformer) in manager.cache


def test_the_transformer_loads_in_the_managers_flux_dtype(installed: tuple[ModelManager, dict]) -> None:
    manager, configs = installed
    bf16 = ModelManager(manager.registry, device="cpu", dtype=torch.bfloat16)
    ident = ModelIdentifierField(**{**configs["schnell"].identifier(), "submodel_type": SubModelType.Transformer})
    with bf16.load(ident) as model:
        assert model.dtype == bf16.dtype_for(configs["schnell"]) == torch.bfloat16


def test_parts_a_single_file_main_lacks_are_a_clear_error(installed: tuple[ModelManager, dict]) -> None:
    manager, configs = installed
    ident = ModelIdentifierField(**configs["dev"].identifier())
    for part in (SubModelType.TextEncoder2, SubModelType.Tokenizer, SubModelType.VAE, None):
        with pytest.raises(ModelLoadError, match=f"single-file FLUX.1 transformer .*submodel "
                                                 f"'{part.value if part else 'None'}' does not exist in it .*"
                                                 "t5_encoder_model, clip_embed_model and vae_model"):
            with manager.load(ident, part):
                pass
    assert manager.preload(configs["schnell"].key) == [manager.cache_key(configs["schnell"],
                                                                         SubModelType.Transformer)]
