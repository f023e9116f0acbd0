"""FLUX.1 main models in the model manager: probed as InvokeAI probes them (base flux, variant from the
transformer), installed, and loaded part by part through the cache with the classes their folder names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from invokeai_provider.core.taxonomy import BaseModelType, FluxVariantType, ModelType, SubModelType
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelLoadError, ModelManager, main_submodels
from invokeai_provider.models.model_manager.probe import ProbeError, probe
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux import build_flux_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def flux_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flux")
    return {variant: build_flux_model(root / variant, variant=variant) for variant in ("dev", "schnell")}


def test_flux_folders_probe_as_flux_with_their_variant(flux_folders: dict[str, Path], tmp_path: Path) -> None:
    for variant, folder in flux_folders.items():
        found = probe(folder)
        assert (found.type, found.base, found.variant) == (ModelType.Main, BaseModelType.Flux, FluxVariantType(variant))
    fill = shutil.copytree(flux_folders["dev"], tmp_path / "fill")
    config = json.loads((fill / "transformer" / "config.json").read_text())
    (fill / "transformer" / "config.json").write_text(json.dumps({**config, "in_channels": 384}))
    assert probe(fill).variant is FluxVariantType.DevFill
    (fill / "transformer" / "config.json").write_text(json.dumps({**config, "joint_attention_dim": 7680}))
    with pytest.raises(ProbeError, match="joint_attention_dim 7680 is not FLUX.1's"):
        probe(fill)


def test_an_installed_flux_model_loads_every_part_with_its_class(flux_folders: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    registry = ModelRegistry((tmp_path / "root").as_uri())
    config = install_model(registry, str(flux_folders["schnell"]), name="tiny-flux-schnell", inplace=True)
    assert (config.base, config.variant) == (BaseModelType.Flux, FluxVariantType.Schnell)
    assert ModelRegistry((tmp_path / "root").as_uri()).find("tiny-flux-schnell").variant is FluxVariantType.Schnell  # persisted
    manager = ModelManager(registry)
    classes = {}
    for part in main_submodels(BaseModelType.Flux):
        with manager.load(config.identifier(), part) as model:
            classes[part] = type(model).__name__
    assert classes.pop(SubModelType.Tokenizer2).startswith("T5Tokenizer")  # transformers 5: the fast one is T5Tokenizer
    assert classes == {SubModelType.Tokenizer: "CLIPTokenizer", SubModelType.TextEncoder: "CLIPTextModel",
                       SubModelType.TextEncoder2: "T5EncoderModel",
                       SubModelType.Transformer: "FluxTransformer2DModel", SubModelType.VAE: "AutoencoderKL",
                       SubModelType.Scheduler: "dict"}


def test_a_model_index_naming_another_class_is_refused(flux_folders: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(flux_folders["dev"], tmp_path / "odd")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "transformer": ["os", "system"]}))
    registry = ModelRegistry((tmp_path / "root").as_uri())
    config = install_model(registry, str(folder), name="odd", inplace=True)
    with pytest.raises(ModelLoadError, match="transformer' is os.system in its model_index.json"):
        with ModelManager(registry).load(config.identifier(), SubModelType.Transformer):
            pass
