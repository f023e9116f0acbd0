"""Z-Image test helpers: InvokeAI's Z-Image text-to-image graph, reading a decoded image, and diffusers' pipeline
parts and scheduler set up as InvokeAI samples."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

PROMPT = "a red fox in the snow, oil painting"


def link(source: str, field: str, destination: str, destination_field: str | None = None) -> dict[str, Any]:
    return {"source": {"node_id": source, "field": field},
            "destination": {"node_id": destination, "field": destination_field or field}}


def t2i_graph(identifier: dict[str, Any], *, prompt: str = PROMPT, negative: str | None = None,
              loader: dict[str, Any] | None = None, **denoise: Any) -> dict[str, Any]:
    """InvokeAI's Z-Image text-to-image graph: loader, prompt(s), denoise, decode."""
    nodes = {"load": {"id": "load", "type": "z_image_model_loader", "model": identifier, **(loader or {})},
             "prompt": {"id": "prompt", "type": "z_image_text_encoder", "prompt": prompt},
             "denoise": {"id": "denoise", "type": "z_image_denoise", "width": 128, "height": 64, "steps": 3,
                         "seed": 7, **denoise},
             "decode": {"id": "decode", "type": "z_image_l2i"}}
    edges = [link("load", "qwen3_encoder", "prompt"), link("load", "transformer", "denoise"),
             link("prompt", "conditioning", "denoise", "positive_conditioning"), link("denoise", "latents", "decode"),
             link("load", "vae", "decode")]
    if negative is not None:
        nodes["negative"] = {"id": "negative", "type": "z_image_text_encoder", "prompt": negative}
        edges += [link("load", "qwen3_encoder", "negative"),
                  link("negative", "conditioning", "denoise", "negative_conditioning")]
    return {"id": "z-image-t2i", "nodes": nodes, "edges": edges}


def image_of(run: Any, state: Any, node: str = "decode") -> np.ndarray:
    from PIL import Image

    [decoded] = state.outputs_of(node)
    return np.asarray(Image.open(io.BytesIO(run.store.read("images", decoded.image.image_name)))).astype(np.int16)


def pipeline_parts(manager: Any, identifier: dict[str, Any]) -> dict[str, Any]:
    """The installed model's parts as the manager loads them, for diffusers' pipelines."""
    from invokeai_provider.core.taxonomy import SubModelType

    parts = {}
    config = manager.get_config(identifier)
    for name in ("tokenizer", "text_encoder", "transformer", "vae"):
        with manager.load(config.identifier(), SubModelType(name)) as model:
            parts[name] = model
    return parts


def dynamic_scheduler() -> Any:
    """The flow-matching scheduler with the resolution-dependent shift InvokeAI always uses (the model's own config
    has a static shift 3, which InvokeAI does not read)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, use_dynamic_shifting=True, base_shift=0.5,
                                           max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


def pipeline_image(images: Any) -> np.ndarray:
    """A pipeline's ``output_type="np"`` image in 0..255 (it rounds; InvokeAI truncates: within 1 level)."""
    return (images[0] * 255).round().astype(np.int16)
