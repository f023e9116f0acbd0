"""The nodes, one module per family, and the Airflow operator made from each node class.

Importing this package is cheap: node families are imported by the registry on first use, and none of
them imports torch, diffusers or transformers at module level. ``invokeai_provider.operators.<Name>Operator``
(``DenoiseLatentsOperator`` for ``denoise_latents``) is built on first access from the registered node
class; that access imports Airflow's task SDK.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
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
    "sd.denoise_meta",
    "sd.vae",
    "sd.masks",
    "sd.controlnet",
    "sd.t2i_adapter",
    "sd.ip_adapter",
    "sd.multi_diffusion",
    "flux.model_loader",
    "flux.lora_loaders",
    "flux.prompts",
    "flux.denoise",
    "flux.denoise_meta",
    "flux.image_conditioning",
    "flux.controlnet",
    "flux.control_lora",
    "flux.ip_adapter",
    "flux.redux",
    "flux.vae",
    "flux2.model_loader",
    "flux2.dev_model_loader",
    "flux2.lora_loaders",
    "flux2.prompts",
    "flux2.denoise",
    "flux2.vae",
    "z_image.model_loader",
    "z_image.prompts",
    "z_image.lora_loaders",
    "z_image.control",
    "z_image.denoise",
    "z_image.denoise_meta",
    "z_image.vae",
    "cogview4.model_loader",
    "cogview4.prompts",
    "cogview4.denoise",
    "cogview4.vae",
    "sd3.model_loader",
    "sd3.text_encoder",
    "sd3.denoise",
    "sd3.vae",
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
    "image.faces",
    "upscale.esrgan",
    "upscale.spandrel",
)


# Old import paths of node modules -> where they live now, kept for node packs and DAG files written against them.
OLD_MODULE_PATHS: dict[str, str] = {f"{__name__}.primitives": f"{__name__}.core.primitives"}


class _OldModulePaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as its current module (the same module object), with no file at the old path."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(fullname, self) if fullname in OLD_MODULE_PATHS else None

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(OLD_MODULE_PATHS[spec.name])

    def exec_module(self, module: Any) -> None:
        """The current module ran when it was imported."""


if not any(isinstance(finder, _OldModulePaths) for finder in sys.meta_path):
    sys.meta_path.append(_OldModulePaths())


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
