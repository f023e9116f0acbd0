"""The nodes, one module per family, and the Airflow operator made from each node class.

Importing this package is cheap: node families are imported by the registry on first use, and none of
them imports torch, diffusers or transformers at module level. ``invokeai_provider.operators.<Name>Operator``
(``DenoiseLatentsOperator`` for ``denoise_latents``) is built on first access from the registered node
class; that access imports Airflow's task SDK.
"""

from __future__ import annotations

from typing import Any

# Modules of built-in node families, imported by invokeai_provider.registry.load_node_packs().
NODE_FAMILIES: tuple[str, ...] = (
    "control_flow",
    "primitives",
    "math_nodes",
    "collection_nodes",
    "string_nodes",
    "prompt_nodes",
    "metadata_nodes",
    "model_loader_nodes",
    "latent_nodes",
    "sd_nodes",
    "image_nodes",
    "mask_nodes",
    "infill_nodes",
    "canvas_nodes",
    "image_adjust_nodes",
    "tile_nodes",
    "preprocessor_nodes",
    "detection_nodes",
    "soft_edge_nodes",
    "lineart_nodes",
    "mlsd_nodes",
    "normal_map_nodes",
    "openpose_nodes",
    "mediapipe_face_nodes",
    "pbr_nodes",
    "upscale_nodes",
)


def __getattr__(name: str) -> Any:
    if name.endswith("Operator") and not name.startswith("_"):
        from invokeai_provider.operator import operator_classes

        classes = operator_classes()
        if name in classes:
            return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    from invokeai_provider.operator import operator_classes

    return sorted([*globals(), *operator_classes()])
