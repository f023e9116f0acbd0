"""Single-file SD1/SD2/SDXL ControlNets: recognising them (InvokeAI's rules) and loading them offline.

Three key layouts are in use: lllyasviel's original one under ``control_model.`` (``.pth``/``.safetensors``), the
same names without the prefix (e.g. thibaud's SD2.1 files), and diffusers' own names in one file (most SDXL
files). InvokeAI calls a file a ControlNet when a key starts with ``controlnet``, ``control_model`` or
``input_blocks``, and reads its base from the context width of its cross-attention layers (768 SD1, 1024 SD2,
2048 or 1280 SDXL).

InvokeAI loads them with diffusers' ``from_single_file``, which fetches a config from the hub. Here the
``ControlNetModel`` config is built locally: from the weights' shapes (widths, blocks, layers, transformer depth,
projections, SDXL's added embedding) and the base's attention heads (SD1: 8 per block; SD2/SDXL: 64-wide heads),
or taken from a diffusers ControlNet folder given at install (``--config``), which a ControlNet whose heads do not
follow its base's rule needs. The keys are converted with diffusers' converter (plus SDXL's ``label_emb``, which it
leaves out), then loaded strictly: a file that does not fit its config fails naming what is missing.

Refused, with the reason: xinsir's "union" files (a control-type embedding and transformer that InvokeAI's
``controlnet`` node has no field for; InvokeAI would load them as a plain ControlNet, dropping those layers) and
Stability's Control-LoRAs (``lora_controlnet``), which need the main model's UNet weights to become a ControlNet.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:
    import torch

CONTROLNET_PREFIXES = ("controlnet", "control_model", "input_blocks")  # InvokeAI's mark of a ControlNet file
LDM_PREFIX = "control_model."
UNION_KEYS = ("task_embedding", "control_add_embedding.", "transformer_layes.", "spatial_ch_projs.",
              "control_type_proj.")  # xinsir's ControlNetModel_Union (diffusers' ControlNetUnionModel)
CONTROL_LORA_KEY = "lora_controlnet"
SDXL_WIDTHS = (2048, 1280)
HEAD_WIDTH = 64  # SD2 and SDXL attention heads; SD1 has 8 heads per block whatever its width
SD1_HEADS = 8
_ATTN_KEY = re.compile(r"attn2\.to_k\.weight$")


class ControlNetCheckpointError(ValueError):
    """A single-file ControlNet this provider cannot load."""


def looks_like_controlnet(keys: Mapping[str, Any]) -> bool:
    """InvokeAI's test for a ControlNet checkpoint: a key starting with one of `CONTROLNET_PREFIXES`."""
    return any(key.startswith(CONTROLNET_PREFIXES) for key in keys)


def refusal(keys: Mapping[str, Any]) -> Optional[str]:
    """Why a ControlNet-looking file cannot run here (a union model or a Control-LoRA), or None."""
    if CONTROL_LORA_KEY in keys:
        return ("a Control-LoRA (Stability's lora_controlnet), which becomes a ControlNet only with the main model's "
                "UNet weights; neither InvokeAI 6.11 nor this provider loads these; install a full ControlNet")
    union = sorted({k.split(".")[0] for k in keys if k.startswith(UNION_KEYS)})
    if union:
        return (f"a union ControlNet ({', '.join(union[:3])} layers), whose control-type embedding InvokeAI's "
                "controlnet node cannot set; InvokeAI would run it as a plain ControlNet without those layers, which "
                "this provider refuses to do silently; install a single-purpose ControlNet")
    return None


def context_width(shapes: Mapping[str, tuple[int, ...]]) -> Optional[int]:
    """The text-context width the ControlNet's cross-attention takes (``attn2.to_k`` input), any key layout."""
    for key in sorted(shapes):
        if _ATTN_KEY.search(key) and len(shapes[key]) == 2:
            return int(shapes[key][-1])
    return None


def checkpoint_base(shapes: Mapping[str, tuple[int, ...]]) -> Optional[str]:
    """``"sd-1"``, ``"sd-2"`` or ``"sdxl"`` from the context width, None when it matches none (InvokeAI's table)."""
    width = context_width(shapes)
    return {768: "sd-1", 1024: "sd-2", 2048: "sdxl", 1280: "sdxl"}.get(width) if width else None


def read_checkpoint(path: Path) -> dict[str, "torch.Tensor"]:
    """The tensors of a ``.safetensors`` file, or of a scanned pickle (``weights_only``), flat, on the CPU."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    from invokeai_provider.models.model_manager.probe import scan_pickle

    scan_pickle(path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ControlNetCheckpointError(f"{path.name}: holds a {type(data).__name__}, not a state dict")
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def to_diffusers_keys(state: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """diffusers' names for a ControlNet in any of the three layouts (diffusers' converter, plus ``label_emb``)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint

    if "time_embedding.linear_1.weight" in state:  # diffusers' names already
        return dict(state)
    if any(k.startswith(LDM_PREFIX) for k in state):
        state = {k[len(LDM_PREFIX):]: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
    if "time_embed.0.weight" not in state:
        raise ControlNetCheckpointError("no time embedding (time_embed.0 / time_embedding.linear_1): not a full "
                                        "ControlNet")
    downsamplers = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"input_blocks\.(\d+)\.0\.op\.weight", k)))
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("input_blocks.")}
    # input_blocks.0 is conv_in; the first downsampler follows layers_per_block entries
    layers = downsamplers[0] - 1 if downsamplers else max(blocks)
    converted = convert_controlnet_checkpoint(state, {"layers_per_block": layers})
    for diffusers_key, ldm_key in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
        if ldm_key in state:  # SDXL's added (pooled text + size) embedding, which the converter leaves out
            converted[diffusers_key] = state[ldm_key]
    return {k: v for k, v in converted.items() if v is not None}


def _count(shapes: Mapping[str, Any], pattern: str) -> int:
    found = {int(m.group(1)) for k in shapes if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def diffusers_config(shapes: Mapping[str, tuple[int, ...]], base: str) -> dict[str, Any]:
    """The ``ControlNetModel`` config of a ControlNet with diffusers' names, from its shapes and its base's heads."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise ControlNetCheckpointError(f"no {key}: not a ControlNet layout this provider reads")
        return tuple(shapes[key])

    levels = _count(shapes, r"down_blocks\.(\d+)\.")
    if levels == 0:
        raise ControlNetCheckpointError("no down blocks")
    widths = [shape(f"down_blocks.{b}.resnets.0.conv1.weight")[0] for b in range(levels)]
    attention = [any(k.startswith(f"down_blocks.{b}.attentions.") for k in shapes) for b in range(levels)]
    depth = [_count(shapes, rf"down_blocks\.{b}\.attentions\.0\.transformer_blocks\.(\d+)\.") if attention[b] else 1
             for b in range(levels)]
    hint = [shape("controlnet_cond_embedding.conv_in.weight")[0]]
    hint += [shape(f"controlnet_cond_embedding.blocks.{2 * i + 1}.weight")[0]
             for i in range(_count(shapes, r"controlnet_cond_embedding\.blocks\.(\d+)\.") // 2)]
    context = context_width(shapes)
    if context is None:
        raise ControlNetCheckpointError("no cross-attention layer (attn2.to_k) to read the context width from")
    projection = next((len(shapes[k]) for k in sorted(shapes) if k.endswith("proj_in.weight")), 4)
    if base == "sd-1":
        heads: Any = SD1_HEADS
    else:
        odd = [w for w in widths if w % HEAD_WIDTH]
        if odd:
            raise ControlNetCheckpointError(
                f"block widths {tuple(widths)} are not multiples of {base}'s {HEAD_WIDTH}-wide attention heads, so "
                "the head count cannot be told from the weights; install it with --config naming a diffusers "
                "ControlNet folder of its architecture")
        heads = tuple(w // HEAD_WIDTH for w in widths)
    config: dict[str, Any] = {
        "_class_name": "ControlNetModel",
        "in_channels": shape("conv_in.weight")[1],
        "conditioning_channels": shape("controlnet_cond_embedding.conv_in.weight")[1],
        "block_out_channels": tuple(widths),
        "down_block_types": tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        "mid_block_type": ("UNetMidBlock2DCrossAttn" if any(k.startswith("mid_block.attentions.") for k in shapes)
                           else "UNetMidBlock2D"),
        "layers_per_block": _count(shapes, r"down_blocks\.0\.resnets\.(\d+)\."),
        "transformer_layers_per_block": depth[0] if len(set(depth)) == 1 else tuple(depth),
        "cross_attention_dim": context,
        "attention_head_dim": heads,
        "use_linear_projection": projection == 2,
        "conditioning_embedding_out_channels": tuple(hint),
    }
    if "add_embedding.linear_1.weight" in shapes:  # SDXL: pooled text embeds + six 256-wide size ids
        config.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=shape("add_embedding.linear_1.weight")[1])
    return config


def _folder_config(folder: Path) -> dict[str, Any]:
    from diffusers import ControlNetModel

    config = ControlNetModel.load_config(str(folder), local_files_only=True)
    if config.get("_class_name") != "ControlNetModel":
        raise ControlNetCheckpointError(f"--config {folder}: its config.json is a {config.get('_class_name')!r}, "
                                        "not a ControlNetModel")
    return dict(config)


def load_controlnet_checkpoint(path: Path, base: str, dtype: "torch.dtype",
                               config_folder: Optional[Path] = None) -> Any:
    """A diffusers ``ControlNetModel`` from a single file (or a folder holding one), config built locally."""
    import torch
    from diffusers import ControlNetModel

    path = Path(path)
    if path.is_dir():  # a folder with one weights file and no config.json (probed as that file)
        weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".pth", ".ckpt", ".pt", ".bin"))
        if len(weights) != 1:
            raise ControlNetCheckpointError(f"{path.name}: no config.json and {len(weights)} weight files")
        path = weights[0]
    state = read_checkpoint(path)
    reason = refusal(state)
    if reason:
        raise ControlNetCheckpointError(f"{path.name}: {reason}")
    try:
        state = to_diffusers_keys(state)
        config = (_folder_config(config_folder) if config_folder is not None
                  else diffusers_config({k: tuple(v.shape) for k, v in state.items()}, base))
    except ControlNetCheckpointError as error:
        raise ControlNetCheckpointError(f"{path.name}: {error}") from None
    with torch.device("meta"):
        model = ControlNetModel.from_config(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)) if keys]
        raise ControlNetCheckpointError(f"{path.name}: the weights do not fit the ControlNet config "
                                        f"{'given by --config' if config_folder else 'read from them'}: "
                                        f"{'; '.join(parts)}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.eval()
