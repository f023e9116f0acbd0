"""Probing and loading SD3 / SD3.5 models with InvokeAI 6.11's rules, from config-only folders and small files (the
tiny models themselves are built by the node tests and `install-tiny`): the StableDiffusion3Pipeline main, SD3's
VAE told from FLUX's by its scaling, Stability's single files and bare transformer folders refused with the reason,
and a CLIP embed without its projection refused where SD3 needs one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.probe import ProbeError, probe

INDEX = {"_class_name": "StableDiffusion3Pipeline", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
         "text_encoder": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
         "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
         "tokenizer_2": ["transformers", "CLIPTokenizer"], "text_encoder_3": ["transformers", "T5EncoderModel"],
         "tokenizer_3": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "SD3Transformer2DModel"],
         "vae": ["diffusers", "AutoencoderKL"]}


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def pipeline_folder(root: Path, index: dict = INDEX) -> Path:
    write(root / "model_index.json", index)
    for part, entry in index.items():
        if isinstance(entry, list) and entry[0]:
            write(root / part / "config.json", {"_class_name": entry[1]})
    return root


def test_a_stable_diffusion_3_pipeline_folder_is_an_sd3_main(tmp_path: Path) -> None:
    result = probe(pipeline_folder(tmp_path / "sd3.5-medium"))
    assert (result.type, result.format, result.base) == (ModelType.Main, ModelFormat.Diffusers,
                                                         BaseModelType.StableDiffusion3)


def test_an_sd3_folder_without_a_clip_or_with_another_transformer_is_refused(tmp_path: Path) -> None:
    index = {**INDEX, "text_encoder_2": [None, None]}
    with pytest.raises(ProbeError, match="without text_encoder_2"):
        probe(pipeline_folder(tmp_path / "no-clip-g", index))
    folder = pipeline_folder(tmp_path / "other")
    write(folder / "transformer" / "config.json", {"_class_name": "FluxTransformer2DModel"})
    with pytest.raises(ProbeError, match="not SD3Transformer2DModel"):
        probe(folder)


def test_a_bare_sd3_transformer_folder_is_refused_with_the_reason(tmp_path: Path) -> None:
    write(tmp_path / "transformer" / "config.json", {"_class_name": "SD3Transformer2DModel", "in_channels": 16})
    with pytest.raises(ProbeError, match="SD3Transformer2DModel folder on its own.*StableDiffusion3Pipeline"):
        probe(tmp_path / "transformer")


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_stabilitys_single_files_are_refused_with_the_reason(tmp_path: Path, prefix: str) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "sd3.5_medium.safetensors"
    save_file({f"{prefix}joint_blocks.0.context_block.attn.qkv.weight": torch.zeros(6, 2),
               f"{prefix}x_embedder.proj.weight": torch.zeros(2, 16, 2, 2)}, str(path))
    with pytest.raises(ProbeError, match="single-file SD3/SD3.5 checkpoint.*only as a diffusers "
                                         "StableDiffusion3Pipeline folder"):
        probe(path)


@pytest.mark.parametrize("scaling, shift, base", [(1.5305, 0.0609, BaseModelType.StableDiffusion3),
                                                  (0.3611, 0.1159, BaseModelType.Flux)])
def test_a_16_channel_vae_folder_is_sd3s_by_its_scaling(tmp_path: Path, scaling: float, shift: float,
                                                        base: BaseModelType) -> None:
    write(tmp_path / "vae" / "config.json", {"_class_name": "AutoencoderKL", "latent_channels": 16,
                                             "scaling_factor": scaling, "shift_factor": shift})
    result = probe(tmp_path / "vae")
    assert (result.type, result.base) == (ModelType.VAE, base)


def test_a_clip_without_its_projection_is_refused_where_sd3_needs_one(tmp_path: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from invokeai_provider.models.model_manager.manager import ModelLoadError
    from invokeai_provider.models.sd3.text_encoding import load_projected_clip

    config = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                            vocab_size=99, projection_dim=32)
    torch.manual_seed(0)
    CLIPTextModel(config).save_pretrained(tmp_path / "plain", safe_serialization=True)
    with pytest.raises(ModelLoadError, match="no text_projection.weight"):
        load_projected_clip(tmp_path / "plain", torch.float32, "model 'clip-l'")
    projected = CLIPTextModelWithProjection(config)
    projected.save_pretrained(tmp_path / "projected", safe_serialization=True)
    loaded = load_projected_clip(tmp_path / "projected", torch.float32, "model 'clip-l'")
    assert torch.equal(loaded.text_projection.weight, projected.text_projection.weight)


def test_sd3_runs_in_bfloat16_on_a_gpu_and_its_t5_may_stay_on_the_cpu(tmp_path: Path, monkeypatch) -> None:
    from invokeai_provider.core.taxonomy import SubModelType
    from invokeai_provider.models.model_manager.configs import ModelConfig
    from invokeai_provider.models.model_manager.manager import ModelManager, main_submodels
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    config = ModelConfig(key="k", hash="blake3:0", path="sd3", file_size=1, name="sd3", source="sd3",
                         type=ModelType.Main, format=ModelFormat.Diffusers, base=BaseModelType.StableDiffusion3)
    registry = ModelRegistry(tmp_path.as_uri())
    assert ModelManager(registry, device="cuda:0").dtype_for(config) == torch.bfloat16
    assert ModelManager(registry, device="cpu").dtype_for(config) == torch.float32
    assert {SubModelType.TextEncoder3, SubModelType.Tokenizer3, SubModelType.Transformer} <= set(
        main_submodels(BaseModelType.StableDiffusion3))
    monkeypatch.setenv("AIRFLOW__INVOKEAI__T5_ENCODER_DEVICE", "cpu")
    assert ModelManager.runs_on_cpu(config, SubModelType.TextEncoder3)
    assert not ModelManager.runs_on_cpu(config, SubModelType.TextEncoder2)  # CLIP-G
