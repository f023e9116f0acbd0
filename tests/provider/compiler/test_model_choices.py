"""The model dropdowns: which registered models a model field accepts."""

from __future__ import annotations

from types import SimpleNamespace

from invokeai_provider.compiler.model_choices import model_names_from_registry
from invokeai_provider.core.taxonomy import BaseModelType, ModelType


def test_model_names_from_registry_filters_by_base_and_type():
    configs = [SimpleNamespace(name=n, base=b, type=t) for n, b, t in [
        ("zeta-sd15", BaseModelType.StableDiffusion1, ModelType.Main),
        ("alpha-sd15", BaseModelType.StableDiffusion1, ModelType.Main),
        ("xl", BaseModelType.StableDiffusionXL, ModelType.Main),
        ("vae-15", BaseModelType.StableDiffusion1, ModelType.VAE)]]
    names = model_names_from_registry(SimpleNamespace(all=lambda: iter(configs)))
    assert names("main_model_loader", "model") == ["alpha-sd15", "zeta-sd15"]
    assert names("sdxl_model_loader", "model") == ["xl"]
    assert names("vae_loader", "vae_model") == ["vae-15"]
