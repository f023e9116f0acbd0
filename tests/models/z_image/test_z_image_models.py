"""Z-Image's models: InvokeAI's sigma schedule against diffusers' scheduler, probing every kind InvokeAI accepts
(pipeline folders of both variants, single-file transformers bare and ComfyUI-prefixed, Qwen3 encoders as folders and
files, three LoRA formats, ControlNets; GGUF identified and installed), the tiny catalog's entries, single files loaded
to the folder's weights, and LoRA names that land on the real modules."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from invokeai_provider.core.taxonomy import BaseModelType, ModelType, Qwen3VariantType, ZImageVariantType
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.probe import ProbeError, probe
from invokeai_provider.models.testing import tiny_z_image as tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("z-image-models")
    tiny.build_z_image_model(folder / "turbo", seed=1)
    tiny.build_qwen3_encoder(folder / "qwen3", seed=1)
    tiny.build_z_image_checkpoint(folder / "bare.safetensors", seed=1)
    tiny.build_z_image_checkpoint(folder / "comfy.safetensors", seed=1, prefix="model.diffusion_model.")
    return folder


def qwen3_file(path: Path) -> Path:
    """The tiny main's Qwen3 (seed 1) as a single file, as ComfyUI ships Qwen3-4B: ``model.*`` names, no head (its
    embedding is tied)."""
    from safetensors.torch import save_file

    state = tiny._qwen3(1).state_dict()
    save_file({k: v.contiguous() for k, v in state.items() if not k.startswith("lm_head.")}, str(path))
    return path


def test_the_sigmas_are_diffusers_dynamically_shifted_schedule() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from invokeai_provider.models.z_image import sampling

    for height, width, steps in ((64, 128, 3), (1024, 1024, 8), (768, 1360, 9)):
        tokens = sampling.image_tokens(height, width)
        shift = sampling.resolution_shift(tokens)
        ours = sampling.sigmas(shift, steps)
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
        mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)
        scheduler.set_timesteps(sigmas=torch.linspace(1.0, 1 / steps, steps).tolist(), mu=mu)
        assert torch.allclose(torch.tensor(ours), scheduler.sigmas.float(), atol=1e-6)
        assert ours[0] == 1.0 and ours[-1] == 0.0
    assert abs(sampling.resolution_shift(4096) - 2.718281828 ** 1.15) < 1e-6
    values = sampling.sigmas(3.0, 4)
    assert sampling.clip(values, 0.0, 1.0) == values
    assert sampling.clip(values, 0.5, 1.0) == values[2:]  # whole steps: int(0.5 * 4) = 2
    assert sampling.clip(values, 0.3, 0.8) == values[1:4]  # int(1.2) = 1 .. int(3.2) + 1 = 4
    assert sampling.noise(5, 64, 32).shape == (1, 16, 8, 4)
    assert torch.equal(sampling.noise(5, 64, 32), torch.randn(1, 16, 8, 4, generator=torch.Generator().manual_seed(5)))


def test_probing_every_kind_invokeai_accepts(built: Path, tmp_path: Path) -> None:
    main = probe(built / "turbo")
    assert (main.type, main.format, main.base, main.variant) == (
        ModelType.Main, ModelFormat.Diffusers, BaseModelType.ZImage, ZImageVariantType.Turbo)
    base = tmp_path / "base"
    import shutil

    shutil.copytree(built / "turbo", base)
    scheduler = base / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "shift": 6.0}))
    assert probe(base).variant is ZImageVariantType.ZBase  # InvokeAI's rule: the scheduler's shift
    encoder = probe(built / "qwen3")
    assert (encoder.type, encoder.format, encoder.base, encoder.variant) == (
        ModelType.Qwen3Encoder, ModelFormat.Qwen3Encoder, BaseModelType.Any, Qwen3VariantType.Qwen3_4B)
    for name in ("bare", "comfy"):
        single = probe(built / f"{name}.safetensors")
        assert (single.type, single.format, single.base, single.variant) == (
            ModelType.Main, ModelFormat.Checkpoint, BaseModelType.ZImage, ZImageVariantType.Turbo)
    for style in tiny.LORA_STYLES:
        lora = probe(tiny.build_z_image_lora(tmp_path / f"{style}.safetensors", style=style))
        assert (lora.type, lora.base) == (ModelType.LoRA, BaseModelType.ZImage), style
    control = probe(tiny.build_z_image_controlnet(tmp_path / "control.safetensors"))
    assert (control.type, control.format, control.base) == (ModelType.ControlNet, ModelFormat.Checkpoint,
                                                            BaseModelType.ZImage)
    file = probe(qwen3_file(tmp_path / "qwen3.safetensors"))
    assert (file.type, file.format, file.variant) == (ModelType.Qwen3Encoder, ModelFormat.Checkpoint,
                                                      Qwen3VariantType.Qwen3_4B)
    odd = tmp_path / "odd"
    shutil.copytree(built / "qwen3", odd)
    config = odd / "text_encoder" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "hidden_size": 2048}))
    with pytest.raises(ProbeError, match="Qwen3 encoder 2048 wide; InvokeAI knows"):
        probe(odd)
    shutil.rmtree(odd / "tokenizer")
    config.write_text(json.dumps({**json.loads(config.read_text()), "hidden_size": 2560}))
    with pytest.raises(ProbeError, match="needs its tokenizer"):
        probe(odd)


def _gguf(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    """A GGUF v3 header (no metadata) with Q8_0 tensor infos and zero data: the probe reads only the header."""
    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value.encode())) + value.encode()

    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 0))
    for index, (name, shape) in enumerate(tensors.items()):
        out += text(name) + struct.pack(f"<I{len(shape)}Q", len(shape), *reversed(shape)) + struct.pack("<IQ", 8,
                                                                                                         64 * index)
    path.write_bytes(bytes(out) + bytes(64 * len(tensors)))
    return path


def test_gguf_transformers_and_encoders_are_identified_and_installed(tmp_path: Path) -> None:
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    transformer = _gguf(tmp_path / "z_image_turbo-Q8_0.gguf", {"cap_embedder.1.weight": (3840, 2560),
                                                               "layers.0.attention.qkv.weight": (11520, 3840)})
    found = probe(transformer)
    assert (found.type, found.format, found.base) == (ModelType.Main, ModelFormat.GGUFQuantized, BaseModelType.ZImage)
    encoder = _gguf(tmp_path / "Qwen3-4B-Q8_0.gguf", {"token_embd.weight": (151936, 2560),
                                                      "blk.0.attn_q_norm.weight": (128,)})
    found = probe(encoder)
    assert (found.type, found.format, found.variant) == (ModelType.Qwen3Encoder, ModelFormat.GGUFQuantized,
                                                         Qwen3VariantType.Qwen3_4B)
    registry = ModelRegistry((tmp_path / "root").as_uri())
    installed = [install_model(registry, str(path)) for path in (transformer, encoder)]
    assert [(c.type, c.format) for c in installed] == [(ModelType.Main, ModelFormat.GGUFQuantized),
                                                       (ModelType.Qwen3Encoder, ModelFormat.GGUFQuantized)]


def test_the_catalog_installs_each_kind_with_the_mains_weights(tmp_path: Path) -> None:
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_catalog import default_name, tiny_model
    from invokeai_provider.models.testing.tiny_install import install_tiny

    registry = ModelRegistry((tmp_path / "root").as_uri())
    found = {}
    for kind in ("main", "qwen3_encoder", "vae", "lora", "controlnet"):
        entry = tiny_model(kind, "z-image")
        found[kind] = install_tiny(registry, kind, "z-image").config
        assert found[kind].name == default_name(entry)
    assert {k: (c.type.value, c.base.value) for k, c in found.items()} == {
        "main": ("main", "z-image"), "qwen3_encoder": ("qwen3_encoder", "any"), "vae": ("vae", "flux"),
        "lora": ("lora", "z-image"), "controlnet": ("controlnet", "z-image")}
    assert [c.name for c in found.values()][:3] == ["tiny-z-image", "tiny-z-image-qwen3_encoder", "tiny-z-image-vae"]
    main = registry.root / found["main"].path
    from safetensors.torch import load_file

    def weights(path: Path) -> dict[str, torch.Tensor]:
        return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(str(f)).items()}

    encoder = registry.root / found["qwen3_encoder"].path / "text_encoder"
    assert all(torch.equal(v, weights(encoder)[f"model.{k}"]) for k, v in weights(main / "text_encoder").items())
    vae = registry.root / found["vae"].path
    assert all(torch.equal(v, weights(vae)[k]) for k, v in weights(main / "vae").items())


def test_single_files_load_to_the_folders_weights(built: Path, tmp_path: Path) -> None:
    from diffusers import ZImageTransformer2DModel

    from invokeai_provider.models.text_encoders.qwen3 import load_file as load_qwen3_file
    from invokeai_provider.models.z_image.loading import load_transformer_file

    folder = ZImageTransformer2DModel.from_pretrained(built / "turbo" / "transformer").state_dict()
    for name in ("bare", "comfy"):
        model = load_transformer_file(built / f"{name}.safetensors", torch.float32)
        assert model.config.n_layers == tiny.LAYERS and model.config.cap_feat_dim == 2560
        state = model.state_dict()
        assert state.keys() == folder.keys() and all(torch.equal(state[k], folder[k]) for k in folder)
    from transformers import Qwen3Model

    encoder = load_qwen3_file(qwen3_file(tmp_path / "q.safetensors"), torch.float32)
    reference = Qwen3Model.from_pretrained(built / "turbo" / "text_encoder")
    ids = torch.tensor([[5, 9, 30, 2]])
    with torch.no_grad():
        assert torch.equal(encoder(ids, output_hidden_states=True).hidden_states[-2],
                           reference(ids, output_hidden_states=True).hidden_states[-2])


def test_a_single_file_qwen3_encoder_takes_its_tokenizer_from_its_config_folder(built: Path, tmp_path: Path) -> None:
    from invokeai_provider.core.fields import ModelIdentifierField
    from invokeai_provider.core.taxonomy import SubModelType
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelLoadError, ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    path = qwen3_file(tmp_path / "qwen3-4b.safetensors")
    bare_root, given_root = (ModelRegistry((tmp_path / name).as_uri()) for name in ("bare", "given"))
    bare = install_model(bare_root, str(path), name="bare")
    given = install_model(given_root, str(path), name="given", config_path=str(built / "qwen3"))
    with pytest.raises(ModelLoadError, match="ships no tokenizer .*--config"):
        with ModelManager(bare_root, device="cpu").load(
                ModelIdentifierField.model_validate(bare.identifier(SubModelType.Tokenizer))):
            pass
    with ModelManager(given_root, device="cpu").load(
            ModelIdentifierField.model_validate(given.identifier(SubModelType.Tokenizer))) as tokenizer:
        assert tokenizer("<|im_start|>user").input_ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_lora_keys_of_every_format_land_on_the_models_modules(built: Path, tmp_path: Path) -> None:
    from diffusers import ZImageTransformer2DModel
    from safetensors.torch import load_file
    from transformers import Qwen3Model

    from invokeai_provider.models.patches.lora import apply_loras
    from invokeai_provider.models.z_image.lora_conversion import ZImageLoraError, to_diffusers_names

    transformer = ZImageTransformer2DModel.from_pretrained(built / "turbo" / "transformer")
    encoder = Qwen3Model.from_pretrained(built / "turbo" / "text_encoder")
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    for style in tiny.LORA_STYLES:
        raw = load_file(str(tiny.build_z_image_lora(tmp_path / f"{style}.safetensors", style=style,
                                                    text_encoder=True, seed=2)))
        converted = to_diffusers_names(raw)
        owners = {key.split(".")[0] for key in converted}
        assert owners == ({"transformer"} if style == "kohya" else {"transformer", "text_encoder"})
        with apply_loras(transformer, [(converted, 0.5)], target="transformer", base="z-image"):
            patched = transformer.state_dict()
            name = "layers.1.feed_forward.w2"
            if style == "kohya":
                key = "lora_unet__layers_1_feed_forward_w2"
                up, down, scale = raw[f"{key}.lora_up.weight"], raw[f"{key}.lora_down.weight"], 0.5
            else:
                key = f"{'transformer' if style == 'diffusers' else 'diffusion_model'}.{name}"
                up, down, scale = raw[f"{key}.lora_B.weight"], raw[f"{key}.lora_A.weight"], 1.0
            expected = before[f"{name}.weight"] + 0.5 * scale * up @ down
            assert torch.allclose(patched[f"{name}.weight"], expected, atol=1e-6)
            changed = {k for k in before if not torch.equal(before[k], patched[k])}
            assert len(changed) == len(tiny.lora_layers())  # every layer of the file, nothing else
        assert all(torch.equal(before[k], v) for k, v in transformer.state_dict().items())
        if style != "kohya":
            with apply_loras(encoder, [(converted, 1.0)], target="text_encoder", base="z-image"):
                pass  # the Qwen3 layers resolve
    with pytest.raises(ZImageLoraError, match="not a Z-Image LoRA key"):
        to_diffusers_names({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(1)})
