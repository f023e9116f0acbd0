"""The nodes, one module per family, and (from the provider issue on) the Airflow operator made from each.

Importing this package is cheap: node families are imported by the registry on first use, and none of
them imports torch, diffusers or transformers at module level.
"""

from __future__ import annotations

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
)
