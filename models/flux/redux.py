"""FLUX Redux: an image prompt turned into extra T5-like tokens, as InvokeAI's ``flux_redux`` and ``flux_denoise``
make and use them.

Two models take part. A SigLIP vision model (InvokeAI's starter ``google/siglip-so400m-patch14-384``, installed as
type ``siglip``, base any: a transformers folder whose config names ``SiglipModel``; only its vision tower is
loaded) encodes the image through its own image processor into a grid of 1,152-wide tokens. The Redux embedder
(type ``flux_redux``, base flux: one safetensors file with ``redux_up``/``redux_down``, diffusers'
``ReduxImageEncoder``) maps each token to T5-XXL's 4,096. The node then may shrink the token grid (an interpolation
by ``downsampling_factor``) and scales the tokens by ``weight`` squared, InvokeAI's rules. ``flux_denoise`` appends
the tokens of every Redux conditioning after the positive prompt's T5 tokens (text position ids zero).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from invokeai_provider.models.flux.text_encoding import FluxConditioning

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

REDUX_KEYS = frozenset({"redux_up.weight", "redux_up.bias", "redux_down.weight", "redux_down.bias"})
SIGLIP_CLASSES = ("SiglipModel", "SiglipVisionModel")
SIGLIP_PROCESSOR_FILE = "preprocessor_config.json"
# The name InvokeAI installs its SigLIP starter model under, and looks the model up by
SIGLIP_NAME = "SigLIP - google/siglip-so400m-patch14-384"
SIGLIP_SOURCE = "google/siglip-so400m-patch14-384"
T5_WIDTH = 4096  # the transformer's context width: Redux tokens must have it
DOWNSAMPLING_FUNCTIONS = ("nearest", "bilinear", "bicubic", "area", "nearest-exact")


class ReduxError(ValueError):
    """A Redux or SigLIP model, or Redux tokens, this provider cannot use; the message says why."""


def is_redux(keys: Iterable[str]) -> bool:
    """InvokeAI's test: exactly the four Redux tensors."""
    return set(keys) == REDUX_KEYS


def folder_siglip_class(path: Path) -> str | None:
    """The SigLIP class a folder's ``config.json`` names (``architectures``), or None for another folder."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    architectures = data.get("architectures") if isinstance(data, dict) else None
    name = architectures[0] if isinstance(architectures, list) and architectures else None
    return name if name in SIGLIP_CLASSES else None


def find_siglip(configs: Iterable[Any]) -> Any:
    """The SigLIP model Redux uses among installed model records: InvokeAI's (by its starter name), else the only
    SigLIP installed."""
    from invokeai_provider.core.taxonomy import ModelType
    from invokeai_provider.models.model_manager.starter_models import installed_starter

    return installed_starter(configs, ModelType.SigLIP, SIGLIP_NAME, SIGLIP_SOURCE, "FLUX Redux's SigLIP encoder", ReduxError)


def load_redux(path: Path, dtype: "torch.dtype") -> Any:
    """The Redux embedder of a single file as diffusers' ``ReduxImageEncoder``; its widths are read from the
    shapes and its output must be T5-XXL's."""
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
    from safetensors.torch import load_file

    state = load_file(str(path))
    if not is_redux(state):
        raise ReduxError(f"{Path(path).name}: not a FLUX Redux file (expected exactly {', '.join(sorted(REDUX_KEYS))})")
    inner, siglip_width = state["redux_up.weight"].shape
    out_width, down_in = state["redux_down.weight"].shape
    if out_width != T5_WIDTH or inner != 3 * T5_WIDTH or down_in != inner:
        raise ReduxError(f"{Path(path).name}: Redux layers {inner}x{siglip_width} and {out_width}x{down_in}; FLUX.1's "
                         f"map SigLIP tokens to T5's {T5_WIDTH} through {3 * T5_WIDTH}")
    model = ReduxImageEncoder(redux_dim=int(siglip_width), txt_in_features=T5_WIDTH)
    model.load_state_dict(state)
    return model.to(dtype=dtype).eval()


def load_siglip(folder: Path, dtype: "torch.dtype") -> Any:
    """SigLIP's vision tower and its image processor as one cache entry (`CoreModel`), as InvokeAI's node uses
    them together."""
    from transformers import SiglipImageProcessor, SiglipVisionModel

    from invokeai_provider.models.model_manager.core_models import CoreModel

    if not (Path(folder) / SIGLIP_PROCESSOR_FILE).is_file():
        raise ReduxError(f"{folder}: a SigLIP folder needs its image processor ({SIGLIP_PROCESSOR_FILE})")
    model = SiglipVisionModel.from_pretrained(folder, local_files_only=True, torch_dtype=dtype).eval()
    return CoreModel(model, SiglipImageProcessor.from_pretrained(folder, local_files_only=True))


def siglip_encode(siglip: Any, image: "Image") -> "torch.Tensor":
    """The image's SigLIP tokens ``(1, patches, width)``: the processor resizes and normalises it (InvokeAI's
    settings), the vision tower's last hidden state is taken."""
    import torch

    model = siglip.model
    inputs = siglip.processor.preprocess(images=[image], do_resize=True, return_tensors="pt", do_convert_rgb=True)
    with torch.no_grad():
        return model(**inputs.to(device=model.device, dtype=model.dtype)).last_hidden_state


def redux_embed(redux: Any, encoded: "torch.Tensor") -> "torch.Tensor":
    """SigLIP tokens mapped to T5's width by the Redux embedder, in the embedder's dtype and device."""
    import torch

    parameter = next(redux.parameters())
    with torch.no_grad():
        return redux(encoded.to(device=parameter.device, dtype=parameter.dtype)).image_embeds


def downsample_and_weight(tokens: "torch.Tensor", factor: int = 1, function: str = "area",
                          weight: float = 1.0) -> "torch.Tensor":
    """InvokeAI's Redux strength controls: the square token grid shrunk ``factor`` times per side by
    ``function`` (torch's interpolation modes), then the tokens scaled by ``weight`` squared."""
    import torch

    if function not in DOWNSAMPLING_FUNCTIONS:
        raise ReduxError(f"downsampling function {function!r}: expected one of {', '.join(DOWNSAMPLING_FUNCTIONS)}")
    batch, count, width = tokens.shape
    if factor > 1:
        side = math.isqrt(count)
        if side * side != count:
            raise ReduxError(f"{count} Redux tokens are not a square grid, so they cannot be downsampled")
        if side // factor < 1:
            raise ReduxError(f"a {side}x{side} token grid cannot be downsampled {factor} times")
        grid = tokens.reshape(batch, side, side, width).transpose(1, -1)
        with torch.no_grad():
            grid = torch.nn.functional.interpolate(grid, size=(side // factor, side // factor), mode=function)
        tokens = grid.transpose(1, -1).reshape(batch, -1, width)
    if weight != 1.0:
        tokens = tokens * weight * weight
    return tokens


def with_redux(conditioning: FluxConditioning, tokens: Sequence["torch.Tensor"]) -> FluxConditioning:
    """The positive conditioning with each Redux conditioning's tokens after its T5 tokens, in order."""
    import torch

    if not tokens:
        return conditioning
    t5 = conditioning.t5_embeds
    for index, extra in enumerate(tokens):
        if extra.ndim != 3 or extra.shape[0] != t5.shape[0] or extra.shape[-1] != t5.shape[-1]:
            raise ReduxError(f"Redux conditioning {index}: tokens of shape {tuple(extra.shape)} do not fit T5 tokens "
                             f"of shape {tuple(t5.shape)}")
    joined = torch.cat([t5, *(extra.to(device=t5.device, dtype=t5.dtype) for extra in tokens)], dim=1)
    return FluxConditioning(t5_embeds=joined, clip_embeds=conditioning.clip_embeds)
