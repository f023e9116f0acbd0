"""Where FLUX's models live: in bfloat16 on a GPU (T5 overflows in float16), and the T5 encoder kept on the CPU
with ``[invokeai] t5_encoder_device = cpu`` while the other parts go to the execution device."""

from __future__ import annotations


import pytest
import torch

from invokeai_provider.config import ConfigError
from invokeai_provider.core.taxonomy import SubModelType
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.ram_cache import ModelCache
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_install import install_tiny


@pytest.fixture(scope="module")
def flux_registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    registry = ModelRegistry(tmp_path_factory.mktemp("flux-placement").as_uri())
    install_tiny(registry, "main", "flux")
    install_tiny(registry, "t5_encoder")
    return registry


def test_flux_models_and_t5_encoders_load_in_bfloat16_on_a_gpu(flux_registry: ModelRegistry) -> None:
    gpu = ModelManager(flux_registry, device="cuda:0")
    flux, t5 = flux_registry.find("tiny-flux"), flux_registry.find("tiny-flux-t5_encoder")
    assert gpu.dtype == torch.float16  # SD's
    assert gpu.dtype_for(flux) == gpu.dtype_for(t5) == torch.bfloat16
    assert ModelManager(flux_registry, device="cuda:0", dtype=torch.float16).dtype_for(flux) == torch.float16
    assert ModelManager(flux_registry, device="cpu").dtype_for(flux) == torch.float32


def test_the_t5_encoder_stays_on_the_cpu_when_configured(flux_registry: ModelRegistry,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    moves: list[tuple[str, str]] = []

    # "meta" stands in for a GPU: every move to it is recorded (Module.to is replaced), none happens
    cache = ModelCache(ram_bytes=1 << 34, execution_device="meta", storage_device="cpu")
    manager = ModelManager(flux_registry, cache, device="cpu")
    flux = flux_registry.find("tiny-flux").identifier()
    from invokeai_provider.core.fields import ModelIdentifierField

    identifier = ModelIdentifierField.model_validate(flux)
    original_to = torch.nn.Module.to

    def to(module: torch.nn.Module, *args, **kwargs):  # type: ignore[no-untyped-def]
        moves.append((type(module).__name__, str(args[0] if args else kwargs.get("device"))))
        return module

    monkeypatch.setattr(torch.nn.Module, "to", to)
    monkeypatch.setenv("AIRFLOW__INVOKEAI__T5_ENCODER_DEVICE", "cpu")
    try:
        for part in (SubModelType.TextEncoder2, SubModelType.Transformer):
            with manager.load(identifier, part):
                pass
        monkeypatch.setenv("AIRFLOW__INVOKEAI__T5_ENCODER_DEVICE", "gpu")
        with pytest.raises(ConfigError, match="t5_encoder_device"):
            manager.runs_on_cpu(flux_registry.find("tiny-flux"), SubModelType.TextEncoder2)
    finally:
        monkeypatch.setattr(torch.nn.Module, "to", original_to)
    assert ("T5EncoderModel", "cpu") in moves and ("T5EncoderModel", "meta") not in moves
    assert ("FluxTransformer2DModel", "meta") in moves
