"""Probing on synthetic state dicts: every SD base and variant, LoRA and embedding styles, and refusals."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.probe import PickleRefusedError, ProbeError, UnsafePickleError, probe
from invokeai_provider.core.taxonomy import BaseModelType, ModelType, ModelVariantType, SchedulerPredictionType

SD_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
XL_KEY = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"


def write(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    save_file({k: torch.zeros(shape, dtype=torch.float16) for k, shape in tensors.items()}, str(path))
    return path


@pytest.mark.parametrize("key, width, in_channels, base, variant", [
    (SD_KEY, 768, 4, BaseModelType.StableDiffusion1, ModelVariantType.Normal),
    (SD_KEY, 768, 9, BaseModelType.StableDiffusion1, ModelVariantType.Inpaint),
    (SD_KEY, 1024, 4, BaseModelType.StableDiffusion2, ModelVariantType.Normal),
    (SD_KEY, 1024, 9, BaseModelType.StableDiffusion2, ModelVariantType.Inpaint),
    (SD_KEY, 1024, 5, BaseModelType.StableDiffusion2, ModelVariantType.Depth),
    (XL_KEY, 2048, 4, BaseModelType.StableDiffusionXL, ModelVariantType.Normal),
    (XL_KEY, 2048, 9, BaseModelType.StableDiffusionXL, ModelVariantType.Inpaint),
    (XL_KEY, 1280, 4, BaseModelType.StableDiffusionXLRefiner, ModelVariantType.Normal),
])
def test_single_file_main_models(tmp_path, key, width, in_channels, base, variant):
    path = write(tmp_path / "m.safetensors", {key: (8, width), IN_KEY: (8, in_channels, 3, 3),
                                               "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3)})
    result = probe(path)
    assert (result.type, result.format, result.base, result.variant) == (ModelType.Main, ModelFormat.Checkpoint,
                                                                          base, variant)
    expected = SchedulerPredictionType.VPrediction if base is BaseModelType.StableDiffusion2 else \
        SchedulerPredictionType.Epsilon
    assert result.prediction_type is expected


def test_depth_is_sd2_only(tmp_path):
    path = write(tmp_path / "m.safetensors", {SD_KEY: (8, 768), IN_KEY: (8, 5, 3, 3)})
    with pytest.raises(ProbeError, match="5 input channels"):
        probe(path)


@pytest.mark.parametrize("cross, in_channels, prediction, base, variant", [
    (768, 4, "epsilon", BaseModelType.StableDiffusion1, ModelVariantType.Normal),
    (1024, 4, "v_prediction", BaseModelType.StableDiffusion2, ModelVariantType.Normal),
    (2048, 9, "epsilon", BaseModelType.StableDiffusionXL, ModelVariantType.Inpaint),
    (1280, 4, "epsilon", BaseModelType.StableDiffusionXLRefiner, ModelVariantType.Normal),
])
def test_diffusers_folders(tmp_path, cross, in_channels, prediction, base, variant):
    folder = tmp_path / "pipe"
    (folder / "unet").mkdir(parents=True)
    (folder / "scheduler").mkdir()
    pipeline = "StableDiffusionXLPipeline" if cross >= 1280 else "StableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    (folder / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": cross, "in_channels": in_channels}))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": prediction}))
    write(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors", {"w": (1,)})
    result = probe(folder)
    assert (result.type, result.format, result.base, result.variant) == (ModelType.Main, ModelFormat.Diffusers, base,
                                                                          variant)
    assert result.prediction_type.value == prediction and result.repo_variant == "fp16"


@pytest.mark.parametrize("keys, base", [
    ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": ()}, BaseModelType.StableDiffusion1),
    ({"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 1024)},
     BaseModelType.StableDiffusion2),
    ({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048),
      "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768)},
     BaseModelType.StableDiffusionXL),
    ({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (4, 768),
      "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": (320, 4)},
     BaseModelType.StableDiffusion1),
])
def test_loras_in_kohya_and_diffusers_styles(tmp_path, keys, base):
    result = probe(write(tmp_path / "lora.safetensors", keys))
    assert (result.type, result.format, result.base) == (ModelType.LoRA, ModelFormat.LyCORIS, base)


@pytest.mark.parametrize("keys, base", [
    ({"emb_params": (2, 768)}, BaseModelType.StableDiffusion1),
    ({"emb_params": (1, 1024)}, BaseModelType.StableDiffusion2),
    ({"clip_l": (1, 768), "clip_g": (1, 1280)}, BaseModelType.StableDiffusionXL),
])
def test_embeddings(tmp_path, keys, base):
    result = probe(write(tmp_path / "emb.safetensors", keys))
    assert (result.type, result.base) == (ModelType.TextualInversion, base)


def test_standalone_vae_base_comes_from_its_name(tmp_path):
    keys = {"encoder.conv_in.weight": (8, 3, 3, 3), "decoder.conv_out.weight": (3, 8, 3, 3)}
    assert probe(write(tmp_path / "sdxl-vae.safetensors", keys)).base is BaseModelType.StableDiffusionXL
    assert probe(write(tmp_path / "ft-mse-vae.safetensors", keys)).base is BaseModelType.StableDiffusion1


def test_unrecognised_file(tmp_path):
    with pytest.raises(ProbeError, match="not a model this provider recognises"):
        probe(write(tmp_path / "x.safetensors", {"something.else": (3,)}))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ProbeError, match="unrecognised model file type '.txt'"):
        probe(tmp_path / "notes.txt")


def test_truncated_safetensors(tmp_path):
    path = write(tmp_path / "m.safetensors", {SD_KEY: (8, 768), IN_KEY: (8, 4, 3, 3)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ProbeError, match="truncated safetensors file"):
        probe(path)


def test_pickles_are_refused_unless_allowed_then_scanned(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {SD_KEY: torch.zeros(8, 768), IN_KEY: torch.zeros(8, 4, 3, 3)}}, ckpt)
    with pytest.raises(PickleRefusedError, match="pickled checkpoints"):
        probe(ckpt)
    assert probe(ckpt, allow_pickle=True).base is BaseModelType.StableDiffusion1

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"x": Exploit()}))
    with pytest.raises(UnsafePickleError, match="builtins.print"):
        probe(evil, allow_pickle=True)
