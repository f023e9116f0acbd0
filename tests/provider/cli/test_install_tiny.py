"""``models install-tiny``: every type and base of the tiny catalog installs a model that the registry's probe
identifies as that type and base; installing again is a no-op; names and kinds are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from invokeai_provider.cli.app import main
from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.models.model_manager.probe import probe
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing import tiny_catalog
from invokeai_provider.models.testing.tiny_catalog import TINY_MODELS, TinyModel, default_name

ENTRIES = sorted(TINY_MODELS, key=lambda key: (key[0].value, key[1].value))


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-root")


def test_the_catalog_covers_the_sd_families() -> None:
    """main, vae, lora and embedding for sd-1, sd-2 and sdxl at least, with the names the examples use."""
    for kind in (ModelType.Main, ModelType.VAE, ModelType.LoRA, ModelType.TextualInversion):
        for base in (BaseModelType.StableDiffusion1, BaseModelType.StableDiffusion2, BaseModelType.StableDiffusionXL):
            assert (kind, base) in TINY_MODELS
    assert default_name(TINY_MODELS[ModelType.Main, BaseModelType.StableDiffusion1]) == "tiny-sd15"
    assert default_name(TINY_MODELS[ModelType.Main, BaseModelType.StableDiffusionXL]) == "tiny-sdxl"
    assert default_name(TINY_MODELS[ModelType.VAE, BaseModelType.StableDiffusion2]) == "tiny-sd2-vae"


@pytest.mark.parametrize("kind, base", ENTRIES, ids=[f"{k.value}-{b.value}" for k, b in ENTRIES])
def test_install_tiny_probes_as_its_type_and_base(model_root: Path, capsys, kind: ModelType,
                                                  base: BaseModelType) -> None:
    args = ["models", "install-tiny", kind.value, "--base", base.value, "--model-root", str(model_root)]
    assert main(args) == 0
    captured = capsys.readouterr()
    name = default_name(TINY_MODELS[kind, base])
    # the family --base names may use a model of another base, as InvokeAI records them: base-any encoders
    # (--base sd-1/sdxl picks the IP-Adapters' CLIP vision, sd-3 its CLIP-G embed and T5, z-image/flux2 their Qwen3)
    # and Z-Image's FLUX VAE; the catalog says which, and the probe must agree with it
    recorded = TINY_MODELS[kind, base].base
    assert recorded == base or (recorded is BaseModelType.Any and kind in (
        ModelType.CLIPVision, ModelType.CLIPEmbed, ModelType.T5Encoder, ModelType.Qwen3Encoder)) or (
        (kind, base, recorded) == (ModelType.VAE, BaseModelType.ZImage, BaseModelType.Flux))
    assert captured.out.startswith(f"installed {name!r}: {recorded.value} {kind.value} ")
    assert "building the tiny random-weight" in captured.err
    config = ModelRegistry(str(model_root)).find(name)
    assert (config.type, config.base) == (kind, recorded)
    found = probe(config.path)  # the files themselves, probed again: not just what the record says
    assert (found.type, found.base) == (kind, recorded)

    assert main(args) == 0  # again: nothing is built, the same record stays
    again = capsys.readouterr()
    assert again.out.startswith(f"{name!r} is already installed: {recorded.value} {kind.value} ")
    assert again.err == ""
    assert [c.key for c in ModelRegistry(str(model_root)).all() if c.name == name] == [config.key]


def test_names_kinds_and_bases_are_checked(model_root: Path, capsys) -> None:
    root = ["--model-root", str(model_root)]
    assert main(["models", "install-tiny", "textual_inversion", "--name", "my-ti", *root]) == 0  # InvokeAI's name
    assert capsys.readouterr().out.startswith("installed 'my-ti': sd-1 embedding ")
    assert main(["models", "install-tiny", "onnx", *root]) == 1
    assert "no tiny model of type 'onnx'; expected one of: main, vae, lora, embedding" in capsys.readouterr().err
    assert main(["models", "install-tiny", "vae", "--base", "sdxl-refiner", *root]) == 1
    assert "no tiny vae model for base 'sdxl-refiner'; expected one of: sd-1, sd-2, sdxl" in capsys.readouterr().err
    assert main(["models", "install-tiny", "lora", "--name", "../escape", *root]) == 1
    assert "model name '../escape'" in capsys.readouterr().err
    assert not (model_root.parent / "escape.safetensors").exists()
    # a name taken by another type: refused, and the taken one is untouched
    assert main(["models", "install-tiny", "lora", "--name", "my-ti", *root]) == 1
    err = capsys.readouterr().err
    assert "a model named 'my-ti' is already installed" in err and "(sd-1 embedding" in err


def test_two_names_are_two_models(model_root: Path, capsys) -> None:
    """The weights are seeded by the name: a second LoRA under another name is a different file, not a
    duplicate the registry would refuse."""
    root = ["--model-root", str(model_root)]
    assert main(["models", "install-tiny", "lora", "--name", "lora-a", *root]) == 0
    assert main(["models", "install-tiny", "lora", "--name", "lora-b", *root]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--json", *root]) == 0
    hashes = {c["name"]: c["hash"] for c in json.loads(capsys.readouterr().out)}
    assert hashes["lora-a"] != hashes["lora-b"]


def test_an_entry_that_builds_the_wrong_base_is_not_registered(tmp_path: Path, monkeypatch) -> None:
    """The probe decides: a VAE folder whose name does not carry its base probes as SD1, and is refused."""
    from invokeai_provider.models.model_manager.install import InstallError
    from invokeai_provider.models.testing.tiny_install import install_tiny

    entry = TINY_MODELS[ModelType.VAE, BaseModelType.StableDiffusionXL]
    wrong = TinyModel(entry.type, entry.base, entry.build)  # named after the model, not the base
    monkeypatch.setitem(tiny_catalog.TINY_MODELS, (entry.type, entry.base), wrong)
    registry = ModelRegistry(str(tmp_path))
    with pytest.raises(InstallError, match="probed as sd-1 vae; it was not registered"):
        install_tiny(registry, "vae", "sdxl", "plain")
    assert list(registry.all()) == []
