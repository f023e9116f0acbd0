"""``flux_ip_adapter`` in InvokeAI's shape: its IPAdapterField (the installed CLIP vision encoder chosen as InvokeAI
chooses it), its validators, and errors naming the field (a wrong model, no encoder installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import only_output
from invokeai_provider.core.context import RunContext
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_install import install_tiny
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManager, dict[str, Any]]:
    registry = ModelRegistry(tmp_path_factory.mktemp("flux-ipa-root").as_uri())
    adapter = install_tiny(registry, "ip_adapter", "flux").config
    encoder = install_tiny(registry, "clip_vision").config
    controlnet = install_tiny(registry, "controlnet", "flux").config
    return ModelManager(registry, device="cpu"), {"adapter": adapter.identifier(), "encoder": encoder.identifier(),
                                                  "controlnet": controlnet.identifier()}


def run_in(tmp_path: Path, manager: ModelManager) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="flux", run_id="r1"),
                      services={"models": manager})


def ip_node(adapter: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"type": "flux_ip_adapter", "image": {"image_name": "ref.png"}, "ip_adapter_model": adapter, **fields}


def test_the_output_carries_the_adapter_and_the_installed_encoder(models: Any, tmp_path: Path) -> None:
    manager, installed = models
    out = only_output(run_in(tmp_path, manager), ip_node(installed["adapter"], weight=[0.5, 1.0, 2.0],
                                                        begin_step_percent=0.2, end_step_percent=0.8))
    field = out.ip_adapter
    assert field.ip_adapter_model.key == installed["adapter"]["key"]
    assert (field.image_encoder_model.key, field.image_encoder_model.type.value) == (installed["encoder"]["key"],
                                                                                     "clip_vision")
    assert (field.image.image_name, field.weight, field.begin_step_percent, field.end_step_percent) == (
        "ref.png", [0.5, 1.0, 2.0], 0.2, 0.8)
    assert (field.target_blocks, field.method, field.mask) == ([], "full", None)


def test_invalid_settings_are_refused(models: Any, tmp_path: Path) -> None:
    manager, installed = models
    run = run_in(tmp_path, manager)
    with pytest.raises(Exception, match="Control weights must be within -1 to 2 range"):
        only_output(run, ip_node(installed["adapter"], weight=[1.0, 2.5]))
    with pytest.raises(Exception, match="Begin step percent must be less than or equal to end step percent"):
        only_output(run, ip_node(installed["adapter"], begin_step_percent=0.7, end_step_percent=0.3))
    with pytest.raises(Exception, match="clip_vision_model"):  # only ViT-L for FLUX
        only_output(run, ip_node(installed["adapter"], clip_vision_model="ViT-H"))
    with pytest.raises(Exception, match="end_step_percent"):
        only_output(run, ip_node(installed["adapter"], end_step_percent=1.5))


def test_errors_name_the_field(models: Any, tmp_path: Path) -> None:
    manager, installed = models
    with pytest.raises(NodeExecutionError, match="field ip_adapter_model: .*ip_adapter"):
        only_output(run_in(tmp_path / "a", manager), ip_node(installed["controlnet"]))
    registry = ModelRegistry((tmp_path / "lonely-root").as_uri())
    alone = install_tiny(registry, "ip_adapter", "flux").config.identifier()
    with pytest.raises(NodeExecutionError, match="field clip_vision_model: the IP-Adapter's ViT-L image encoder: no "
                                                 "clip_vision model is installed, and it cannot be downloaded here; "
                                                 "install InvokeAI/clip-vit-large-patch14"):
        only_output(run_in(tmp_path / "b", ModelManager(registry, device="cpu")), ip_node(alone))


def test_the_node_has_invokeais_shape() -> None:
    from invokeai_provider.core.registry import InvocationRegistry

    cls = InvocationRegistry.get_invocation_class("flux_ip_adapter")
    assert (cls.UIConfig.version, cls.get_output_annotation().get_type()) == ("1.0.0", "ip_adapter_output")
    assert cls.UIConfig.title == "FLUX IP-Adapter" and cls.UIConfig.category == "conditioning"
    fields = cls.model_fields
    assert {name: fields[name].default for name in ("clip_vision_model", "weight", "begin_step_percent",
                                                    "end_step_percent")} == {
        "clip_vision_model": "ViT-L", "weight": 1, "begin_step_percent": 0, "end_step_percent": 1}
    assert {"image", "ip_adapter_model"} <= set(fields)
    assert set(cls.get_output_annotation().model_fields) >= {"ip_adapter"}
