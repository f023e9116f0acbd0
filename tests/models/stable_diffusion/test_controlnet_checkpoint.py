"""Single-file SD ControlNets: the three key layouts probe with their base and load the weights of the model they
were written from (giving its residuals); the config read from a real-sized file's shapes is the real model's;
union files, Control-LoRAs, union folders and unknown widths are refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from invokeai_provider.models.model_manager.probe import ProbeError, probe
from invokeai_provider.models.stable_diffusion import arch_configs
from invokeai_provider.models.stable_diffusion.controlnet_checkpoint import (
    ControlNetCheckpointError,
    diffusers_config,
    load_controlnet_checkpoint,
    to_diffusers_keys,
)
from invokeai_provider.models.testing.tiny_sd_controlnet import controlnet_to_ldm, sd_controlnet, write_controlnet_file

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")]

BASES = ("sd-1", "sd-2", "sdxl")
LAYOUTS = ("control_model", "bare", "diffusers")
_UNET_ONLY = ("up_block_types", "out_channels", "sample_size", "center_input_sample")
REAL_UNETS = {"sd-1": arch_configs.SD15_UNET, "sd-2": arch_configs.SD2_UNET, "sdxl": arch_configs.SDXL_UNET}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each base's tiny ControlNet and its diffusers folder."""
    root = tmp_path_factory.mktemp("controlnets")
    models = {}
    for base in BASES:
        model = sd_controlnet(base, seed=5)
        model.save_pretrained(root / base, safe_serialization=True)
        models[base] = (model, root / base)
    return models


def residuals(model: Any, base: str) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn((2, 4, 8, 8), generator=generator)
    context = torch.randn((2, 5, model.config.cross_attention_dim), generator=generator)
    image = torch.rand((2, 3, 64, 64), generator=generator)
    extra = None
    if base == "sdxl":
        extra = {"text_embeds": torch.randn((2, 1280), generator=generator),
                 "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    with torch.no_grad():
        down, mid = model(sample, torch.tensor(500), encoder_hidden_states=context, controlnet_cond=image,
                          added_cond_kwargs=extra, return_dict=False)
    return [*down, mid]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("base", BASES)
def test_a_single_file_probes_and_gives_its_folders_residuals(tiny, tmp_path, base, layout) -> None:
    model, folder = tiny[base]
    path = write_controlnet_file(model, tmp_path / "cn.safetensors", layout)
    found = probe(path)
    assert (found.type.value, found.format.value, found.base.value) == ("controlnet", "checkpoint", base)
    # SD1's heads (8 per block) hold for the tiny model; tiny SD2/SDXL heads are 16 wide, not 64: their config folder
    loaded = load_controlnet_checkpoint(path, base, torch.float32, None if base == "sd-1" else folder)
    mine, theirs = residuals(loaded, base), residuals(model, base)
    assert len(mine) == len(theirs)
    assert max((a - b).abs().max().item() for a, b in zip(mine, theirs)) <= 1e-6
    assert max(t.abs().max().item() for t in theirs) > 0


def test_a_pickled_original_file_loads_after_its_scan(tiny, tmp_path) -> None:
    model, _ = tiny["sd-1"]
    state = {"control_model." + k: v.clone() for k, v in controlnet_to_ldm(model.state_dict(), model.config).items()}
    path = tmp_path / "control_sd15_tiny.pth"
    torch.save(state, path)
    found = probe(path, allow_pickle=True)
    assert (found.type.value, found.format.value, found.base.value) == ("controlnet", "checkpoint", "sd-1")
    loaded = load_controlnet_checkpoint(path, "sd-1", torch.float32)
    mine, theirs = residuals(loaded, "sd-1"), residuals(model, "sd-1")
    assert max((a - b).abs().max().item() for a, b in zip(mine, theirs)) <= 1e-6


def test_tiny_sd2_heads_need_the_config_folder(tiny, tmp_path) -> None:
    model, _ = tiny["sd-2"]
    path = write_controlnet_file(model, tmp_path / "cn.safetensors")
    with pytest.raises(ControlNetCheckpointError, match=r"not multiples of sd-2's 64-wide attention heads.*--config"):
        load_controlnet_checkpoint(path, "sd-2", torch.float32)
    sd1_folder = tiny["sd-1"][1]  # a config of another architecture: the weights do not fit it
    with pytest.raises(ControlNetCheckpointError, match="do not fit the ControlNet config given by --config"):
        load_controlnet_checkpoint(path, "sd-2", torch.float32, sd1_folder)


@pytest.mark.parametrize("base", BASES)
def test_a_real_sized_files_shapes_give_the_real_config(base) -> None:
    """lllyasviel's SD1.5 / thibaud's SD2.1 / diffusers' SDXL architecture (meta tensors: shapes only): the original
    names convert to the model's own, and the config read from them builds the same model."""
    from diffusers import ControlNetModel

    unet = {k: v for k, v in REAL_UNETS[base].items() if k not in _UNET_ONLY}
    with torch.device("meta"):
        model = ControlNetModel(**unet)
    state = model.state_dict()
    original = {"control_model." + k: v for k, v in controlnet_to_ldm(state, model.config).items()}
    converted = to_diffusers_keys(original)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in state.items()}
    config = diffusers_config({k: tuple(v.shape) for k, v in converted.items()}, base)
    for key, value in config.items():
        if key != "_class_name":
            expected = model.config[key]
            assert (list(value) if isinstance(value, tuple) else value) == \
                (list(expected) if isinstance(expected, (tuple, list)) else expected), key


def write(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(path))
    return path


def test_union_files_control_loras_union_folders_and_odd_widths_are_refused(tmp_path) -> None:
    attn = "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    union = write(tmp_path / "union.safetensors", {"controlnet_mid_block.bias": (8,), "task_embedding": (6, 8),
                                                   "control_add_embedding.linear_1.weight": (8, 8)})
    with pytest.raises(ProbeError, match="a union ControlNet .*control_add_embedding, task_embedding"):
        probe(union)
    lora = write(tmp_path / "control-lora.safetensors", {"lora_controlnet": (1,), "input_blocks.0.0.weight": (8, 4, 3, 3)})
    with pytest.raises(ProbeError, match="a Control-LoRA"):
        probe(lora)
    odd = write(tmp_path / "odd.safetensors", {attn: (8, 512)})
    with pytest.raises(ProbeError, match="context width 512 is not SD1's"):
        probe(odd)
    folder = tmp_path / "union-folder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "ControlNetUnionModel", "cross_attention_dim": 2048}))
    with pytest.raises(ProbeError, match="a union ControlNet \\(ControlNetUnionModel\\)"):
        probe(folder)
    xl = write(tmp_path / "xl.safetensors", {attn: (8, 2048)})
    assert probe(xl).base.value == "sdxl"
