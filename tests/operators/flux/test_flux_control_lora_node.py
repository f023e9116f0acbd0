"""``flux_control_lora_loader`` with the tiny Control LoRA that ``install-tiny control_lora --base flux`` installs:
its output (InvokeAI's ControlLoRAField), its version and fields, and errors naming the field (a model of another
kind or base, a key that is not installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import node, run_nodes
from invokeai_provider.core.context import RunContext
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_install import install_tiny
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManager, dict[str, dict[str, Any]]]:
    registry = ModelRegistry(tmp_path_factory.mktemp("flux-control-lora-root").as_uri())
    control = install_tiny(registry, "control_lora", "flux").config
    assert (control.name, control.type.value, control.base.value) == ("tiny-flux-control_lora", "control_lora",
                                                                      "flux")
    lora = install_tiny(registry, "lora", "flux").config
    return ModelManager(registry, device="cpu"), {"control": control.identifier(), "lora": lora.identifier()}


@pytest.fixture
def run(tmp_path: Path, models: tuple[ModelManager, dict[str, Any]]) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="flux", run_id="r1"),
                      services={"models": models[0]})


def test_the_node_passes_the_lora_its_image_and_weight(run: RunContext, models: Any) -> None:
    from invokeai_provider.operators.flux.control_lora import FluxControlLoRALoaderInvocation

    _, installed = models
    state = run_nodes(run, {"c": node("c", "flux_control_lora_loader", lora=installed["control"],
                                      image={"image_name": "canny.png"}, weight=0.6)})
    (output,) = state.outputs_of("c")
    assert output.type == "flux_control_lora_loader_output"
    field = output.control_lora
    assert (field.lora.key, field.img.image_name, field.weight) == (installed["control"]["key"], "canny.png", 0.6)
    ui = FluxControlLoRALoaderInvocation.UIConfig
    assert (ui.version, ui.title, ui.category) == ("1.1.1", "Control LoRA - FLUX", "model")  # InvokeAI's
    fields = FluxControlLoRALoaderInvocation.model_fields
    assert {"lora", "image", "weight"} <= set(fields) and fields["weight"].default == 1.0


def test_errors_name_the_field(run: RunContext, models: Any) -> None:
    _, installed = models
    plain = {"image": {"image_name": "canny.png"}}
    with pytest.raises(NodeExecutionError, match="field lora: expected a control_lora model, got .* of type lora"):
        run_nodes(run, {"c": node("c", "flux_control_lora_loader", lora=installed["lora"], **plain)})
    missing = {**installed["control"], "key": "no-such-key"}
    with pytest.raises(NodeExecutionError, match="field lora: model key 'no-such-key' is not installed"):
        run_nodes(run, {"c": node("c", "flux_control_lora_loader", lora=missing, **plain)})
    other_base = {**installed["control"], "base": "sdxl"}
    with pytest.raises(NodeExecutionError, match="field lora: expected a control_lora model of base flux"):
        run_nodes(run, {"c": node("c", "flux_control_lora_loader", lora=other_base, **plain)})
