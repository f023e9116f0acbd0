"""The nodes, one module per family, and the Airflow operator made from each node class.

Importing this package is cheap: node families are imported by the registry on first use, and none of
them imports torch, diffusers or transformers at module level. ``invokeai_provider.operators.<Name>Operator``
(``DenoiseLatentsOperator`` for ``denoise_latents``) is built on first access from the registered node
class; that access imports Airflow's task SDK.
"""

from __future__ import annotations

from typing import Any

# Modules of built-in node families, imported by invokeai_provider.core.registry.load_node_packs().
NODE_FAMILIES: tuple[str, ...] = (
    "core.control_flow",
    "core.primitives",
    "core.math",
    "core.collections",
    "core.strings",
    "core.prompts",
    "core.metadata",
    "sd.model_loaders",
    "sd.latents",
    "sd.prompts",
    "sd.denoise",
    "sd.vae",
    "sd.masks",
    "image.ops",
    "image.mask",
    "image.infill",
    "image.canvas",
    "image.adjust",
    "image.tiles",
    "controlnet.preprocessors",
    "controlnet.detection",
    "controlnet.soft_edge",
    "controlnet.lineart",
    "controlnet.mlsd",
    "controlnet.normal_map",
    "controlnet.openpose",
    "controlnet.mediapipe_face",
    "image.pbr_maps",
    "upscale.esrgan",
    "upscale.spandrel",
)


def __getattr__(name: str) -> Any:
    if name.endswith("Operator") and not name.startswith("_"):
        from invokeai_provider.airflow.operator import operator_classes

        classes = operator_classes()
        if name in classes:
            return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    from invokeai_provider.airflow.operator import operator_classes

    return sorted([*globals(), *operator_classes()])
