"""FLUX.1 LoRAs in the formats InvokeAI reads, brought to one form the shared patcher
(`invokeai_provider.models.patches.lora`) applies to diffusers' ``FluxTransformer2DModel`` and the text encoders.

Trainers name FLUX's layers two ways. Black Forest Labs' names (``double_blocks.0.img_attn.qkv``,
``single_blocks.0.linear1``) come from kohya (``lora_unet_`` + underscores), ai-toolkit and other PEFT exports
(``diffusion_model.`` + dots) and XLabs (``double_blocks.0.processor.qkv_lora1``). In those, one layer may be several
of diffusers' layers fused: ``qkv`` is ``to_q``/``to_k``/``to_v``, a single block's ``linear1`` is those three and
``proj_mlp``. A LoRA's update of a fused layer is ``up @ down``, so each diffusers layer gets its rows of ``up`` with
the shared ``down`` and alpha. Diffusers' own names (``transformer.transformer_blocks.0.attn.to_q``, PEFT's
``base_model.model.``) and OneTrainer's (``lora_transformer_`` + underscores) pass through, as do kohya's text
encoder keys (``lora_te1_`` CLIP-L, ``lora_te2_`` T5), which the patcher resolves against the models' own modules.

Kohya files' final-layer keys are skipped, as InvokeAI skips them. The result uses PEFT suffixes (``lora_A``/``lora_B``/``alpha``) under ``transformer.``. LyCORIS layers (LoHa, LoKr, full ``diff``, DoRA; see
`invokeai_provider.models.patches.lycoris`) keep their own suffixes; where one stands for a fused layer, each
diffusers layer gets the whole layer's factors plus a ``row_index`` naming its rows of the update, which the patcher
builds one layer at a time (a DoRA scale, which normalises the fused layer as a whole, is refused there).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping, Optional, TypeVar

from invokeai_provider.models.flux.bfl_names import FLUX1_NAMES, BflNames
from invokeai_provider.models.patches import lycoris

if TYPE_CHECKING:
    import torch

    LoraWeights = dict[str, torch.Tensor]

__all__ = ["FluxLoraFormat", "bfl_layers", "flux_lora_format", "split_bfl_rows", "to_diffusers_names"]

T = TypeVar("T")

FluxLoraFormat = str  # "kohya", "onetrainer", "diffusers", "aitoolkit" (BFL names, PEFT suffixes), "xlabs"

_BLOCK = re.compile(r"(double_blocks|single_blocks)\.(\d+)\.(.+)")
_KOHYA_BLOCK = re.compile(r"(double_blocks|single_blocks)_(\d+)_(img_attn|img_mlp|img_mod|txt_attn|txt_mlp|txt_mod|"
                          r"linear1|linear2|modulation)_?(.*)")
_XLABS = re.compile(r"double_blocks\.(\d+)\.processor\.(qkv|proj)_lora([12])\.(down|up)\.weight")
_PARTS = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight", "lora_A.weight": "lora_A.weight",
          "lora_B.weight": "lora_B.weight", "lora.down.weight": "lora_A.weight", "lora.up.weight": "lora_B.weight",
          "alpha": "alpha", **{role: role for role in lycoris.ROLES if role != "row_index"}}
_DIFFUSERS_MARKERS = ("single_transformer_blocks.", "transformer_blocks.")


def _bfl_layer(key: str, names: BflNames = FLUX1_NAMES) -> Optional[tuple[str, str]]:
    """``(BFL layer name, part)`` of a kohya, ai-toolkit or BFL-PEFT key; None for other formats' keys."""
    stem, part = _split_part(key)
    if part is None:
        return None
    if stem.startswith("lora_unet_"):
        body = stem.removeprefix("lora_unet_")
        if m := _KOHYA_BLOCK.fullmatch(body):
            blocks, index, group, rest = m.groups()
            return f"{blocks}.{index}.{group}{'.' + rest if rest else ''}", part
        kohya_top = {name.replace(".", "_"): name for name in names.top_level}
        return (kohya_top[body], part) if body in kohya_top else None
    for prefix in ("diffusion_model.", "base_model.model."):
        if stem.startswith(prefix):
            body = stem.removeprefix(prefix)
            if _BLOCK.fullmatch(body) or body in names.top_level:
                return body, part
    return None


def _split_part(key: str) -> tuple[str, Optional[str]]:
    for suffix in sorted(_PARTS, key=len, reverse=True):
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    return key, None


def bfl_layers(state: "Mapping[str, T]", names: BflNames = FLUX1_NAMES) -> dict[str, dict[str, T]]:
    """A kohya or BFL-PEFT LoRA's values (tensors, or shapes when probing) per BFL layer, under PEFT part names
    (``lora_A.weight``, ``lora_B.weight``, ``alpha``, LyCORIS roles); keys of no BFL layer are left out."""
    grouped: dict[str, dict[str, T]] = {}
    for key, value in state.items():
        if found := _bfl_layer(key, names):
            grouped.setdefault(found[0], {})[_PARTS[found[1]]] = value
    return grouped


def flux_lora_format(keys: "list[str] | set[str] | dict") -> Optional[FluxLoraFormat]:
    """The FLUX.1 LoRA format of a state dict's keys, or None when they are not a FLUX.1 LoRA (InvokeAI's order of
    checks: kohya, OneTrainer, diffusers, ai-toolkit, XLabs)."""
    names = [k for k in keys if isinstance(k, str)]
    if not names:
        return None
    text = [k for k in names if k.startswith(("lora_te1_", "lora_te2_"))]
    model = [k for k in names if k not in text]
    if model and all(k.startswith("lora_unet_") for k in model) and any(_bfl_layer(k) for k in model):
        return "kohya"
    if model and all(k.startswith("lora_transformer_") for k in model) and any(
            k.startswith(("lora_transformer_single_transformer_blocks_", "lora_transformer_transformer_blocks_"))
            for k in model):
        return "onetrainer"
    if not model:
        return None
    if any(k.startswith(("transformer.", "base_model.model.")) and
           any(marker in k for marker in _DIFFUSERS_MARKERS) for k in model) and \
            all(_split_part(k)[1] is not None for k in model):
        return "diffusers"
    if any(k.startswith(("diffusion_model.double_blocks.", "diffusion_model.single_blocks.",
                         "base_model.model.double_blocks.", "base_model.model.single_blocks.")) for k in model):
        return "aitoolkit"
    if all(_XLABS.fullmatch(k) for k in model):
        return "xlabs"
    return None


def _diffusers_targets(bfl: str, names: BflNames) -> tuple[str, ...]:
    if bfl in names.top_level:
        return (names.top_level[bfl],)
    m = _BLOCK.fullmatch(bfl)
    if m is None:
        raise KeyError(bfl)
    blocks, index, layer = m.groups()
    table, owner = (names.double_block, "transformer_blocks") if blocks == "double_blocks" else \
        (names.single_block, "single_transformer_blocks")
    return tuple(f"{owner}.{index}.{target}" for target in table[layer])


def _row_splits(bfl: str, targets: tuple[str, ...], rows: int, width: int) -> list[int]:
    """How many of a fused BFL layer's ``rows`` go to each diffusers layer (``width``: the layer's input width)."""
    if len(targets) == 1:
        return [rows]
    if bfl.endswith("linear1"):  # q, k, v of the block's width, then the MLP's rows
        return [width, width, width, rows - 3 * width]
    return [rows // 3] * 3


def _convert_fused(bfl: str, parts: dict[str, "torch.Tensor"], key: str, names: BflNames) -> "LoraWeights":
    import torch

    swapped = bfl in names.swapped_halves
    try:
        targets = _diffusers_targets(bfl, names)
    except KeyError:
        raise ValueError(f"LoRA key {key!r}: FLUX layer {bfl!r} is not one a LoRA can patch") from None
    matrices = {"lora_A.weight", "lora_B.weight"} & parts.keys()
    if matrices and len(matrices) < 2:
        raise ValueError(f"LoRA key {key!r}: FLUX layer {bfl!r} lacks an up or down matrix")
    if not matrices or (len(targets) == 1 and not swapped):
        return _convert_lycoris(bfl, targets, parts, key, swapped)  # a DoRA passes through; the patcher checks the rest
    _refuse_split_dora(bfl, targets, parts, key)
    if others := sorted(set(parts) - matrices - {"alpha"}):
        raise ValueError(f"LoRA key {key!r}: FLUX layer {bfl!r} is fused from {', '.join(targets)}; its LoRA "
                         f"matrices come with {', '.join(others)}, which cannot be split with them")
    up, down = parts["lora_B.weight"], parts["lora_A.weight"]
    if swapped:
        up = torch.cat(up.chunk(2, dim=0)[::-1], dim=0)
    splits = _row_splits(bfl, targets, up.shape[0], down.shape[1])
    if min(splits) <= 0 or sum(splits) != up.shape[0]:
        raise ValueError(f"LoRA key {key!r}: FLUX layer {bfl!r} has {up.shape[0]} output rows, which do not split "
                         f"into {', '.join(targets)}")
    out: LoraWeights = {}
    for target, rows in zip(targets, up.split(splits, dim=0)):
        out[f"transformer.{target}.lora_A.weight"] = down
        out[f"transformer.{target}.lora_B.weight"] = rows.contiguous()
        if "alpha" in parts:
            out[f"transformer.{target}.alpha"] = parts["alpha"]
    return out


def _refuse_split_dora(bfl: str, targets: tuple[str, ...], parts: dict[str, "torch.Tensor"], key: str) -> None:
    if "dora_scale" in parts:
        raise ValueError(f"LoRA key {key!r}: FLUX layer {bfl!r} is fused from {', '.join(targets)}; its DoRA scale "
                         "normalises them as one layer, which cannot be split")


def _convert_lycoris(bfl: str, targets: tuple[str, ...], parts: dict[str, "torch.Tensor"],
                     key: str, swapped: bool) -> "LoraWeights":
    """A layer of one diffusers layer under that layer's name (suffixes kept); a fused (or half-swapped) LyCORIS
    layer's factors go to each of its diffusers layers with the ``row_index`` of their rows."""
    import torch

    if len(targets) == 1 and not swapped:
        return {f"transformer.{targets[0]}.{role}": tensor for role, tensor in parts.items()}
    _refuse_split_dora(bfl, targets, parts, key)
    try:
        rows, width = lycoris.update_shape(lycoris.kind_of(parts), parts)[:2]
    except ValueError as exc:
        raise ValueError(f"LoRA key {key!r}: FLUX layer {bfl!r}: the layer {exc}") from None
    order = torch.arange(rows)
    if swapped:
        order = torch.cat(order.chunk(2)[::-1])
    splits = _row_splits(bfl, targets, rows, width)
    if min(splits) <= 0 or sum(splits) != rows:
        raise ValueError(f"LoRA key {key!r}: FLUX layer {bfl!r} has {rows} output rows, which do not split "
                         f"into {', '.join(targets)}")
    out: LoraWeights = {}
    for target, index in zip(targets, order.split(splits)):
        out |= {f"transformer.{target}.{role}": tensor for role, tensor in parts.items()}
        out[f"transformer.{target}.row_index"] = index.clone()
    return out


def split_bfl_rows(bfl: str, rows: "torch.Tensor", width: int) -> dict[str, "torch.Tensor"]:
    """A BFL layer's output rows (a LoRA's up matrix, or a bias) under the diffusers layers it fuses, as
    `to_diffusers_names` splits them (``width``: the layer's input width; the final modulation's halves swapped).

    Raises KeyError for a layer name that is not FLUX's, ValueError when the rows do not split."""
    import torch

    targets = _diffusers_targets(bfl, FLUX1_NAMES)
    if bfl in FLUX1_NAMES.swapped_halves:
        rows = torch.cat(rows.chunk(2, dim=0)[::-1], dim=0)
    splits = _row_splits(bfl, targets, rows.shape[0], width)
    if min(splits) <= 0 or sum(splits) != rows.shape[0]:
        raise ValueError(f"FLUX layer {bfl!r} has {rows.shape[0]} output rows, which do not split into "
                         f"{', '.join(targets)}")
    return {target: part.contiguous() for target, part in zip(targets, rows.split(splits, dim=0))}


def to_diffusers_names(state_dict: "LoraWeights", names: BflNames = FLUX1_NAMES,
                       family: str = "FLUX.1") -> "LoraWeights":
    """A FLUX LoRA in any format `flux_lora_format` knows, with its transformer layers under diffusers' names
    (``names``: the BFL transformer's layer table, FLUX.1's unless a FLUX.2 LoRA is read).

    Raises ValueError, naming the key, for a state dict that is not such a LoRA or a fused layer that does not
    split."""
    form = flux_lora_format(state_dict)
    if form is None:
        raise ValueError(f"not a {family} LoRA in a format this provider reads (kohya, OneTrainer, diffusers, "
                         "ai-toolkit or XLabs)")
    if form in ("onetrainer",):
        return dict(state_dict)
    if form == "diffusers":
        return {("transformer." + k.removeprefix("base_model.model.") if k.startswith("base_model.model.") else k): v
                for k, v in state_dict.items()}
    grouped: dict[str, dict[str, "torch.Tensor"]] = {}
    first_key: dict[str, str] = {}
    out: LoraWeights = {}
    for key, tensor in state_dict.items():
        if key.startswith(("lora_te1_", "lora_te2_")):
            out[key] = tensor
            continue
        if key.startswith("lora_unet_final_layer_"):
            continue  # as InvokeAI reads kohya files: their final-layer keys are left out
        if form == "xlabs":
            block, kind, stream, role = _XLABS.fullmatch(key).groups()  # type: ignore[union-attr]
            bfl = f"double_blocks.{block}.{'img' if stream == '1' else 'txt'}_attn.{kind}"
            part = "lora_A.weight" if role == "down" else "lora_B.weight"
        else:
            found = _bfl_layer(key, names)
            if found is None:
                raise ValueError(f"LoRA key {key!r} is not a layer of a {form} {family} LoRA this provider can apply")
            bfl, suffix = found
            part = _PARTS[suffix]
        grouped.setdefault(bfl, {})[part] = tensor
        first_key.setdefault(bfl, key)
    for bfl, parts in grouped.items():
        out.update(_convert_fused(bfl, parts, first_key[bfl], names))
    return out
