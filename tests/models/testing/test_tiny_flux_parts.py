"""The tiny FLUX parts as standalone models: their layouts, the catalog entries ``install-tiny`` reads (names,
base any for the encoders, the tiny FLUX main's seed under the default names) and ``install-tiny`` without
``--base`` for a kind with one base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from invokeai_provider.cli.app import main
from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.models.testing.tiny_catalog import default_name, seed_for, tiny_model
from invokeai_provider.models.testing.tiny_flux_parts import build_clip_embed, build_flux_vae, build_t5_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_parts_have_the_layouts_invokeai_reads(tmp_path: Path) -> None:
    t5 = build_t5_encoder(tmp_path / "t5")
    index = json.loads((t5 / "text_encoder_2" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded, as the real T5-XXL folder is
    assert json.loads((t5 / "text_encoder_2" / "config.json").read_text())["architectures"] == ["T5EncoderModel"]
    assert json.loads((t5 / "tokenizer_2" / "tokenizer_config.json").read_text())["model_max_length"] == 512
    clip = build_clip_embed(tmp_path / "clip")
    assert json.loads((clip / "text_encoder" / "config.json").read_text())["hidden_size"] == 768
    assert (clip / "tokenizer" / "tokenizer.json").is_file()
    vae = build_flux_vae(tmp_path / "vae")
    assert json.loads((vae / "config.json").read_text())["latent_channels"] == 16
    for build, dest in ((build_t5_encoder, t5), (build_clip_embed, clip), (build_flux_vae, vae)):
        with pytest.raises(FileExistsError):
            build(dest)
    single = build_flux_vae(tmp_path / "ae.safetensors")
    with pytest.raises(FileExistsError):
        build_flux_vae(single)


def test_the_catalog_entries_take_the_tiny_mains_seed_under_their_default_names() -> None:
    flux_main = tiny_model("main", "flux")
    for kind, base, name in (("vae", "flux", "tiny-flux-vae"), ("t5_encoder", None, "tiny-flux-t5_encoder"),
                             ("clip_embed", None, "tiny-flux-clip_embed")):
        entry = tiny_model(kind, base)
        assert default_name(entry) == name
        assert entry.seed(name) == flux_main.seed("tiny-flux") == seed_for("tiny-flux")
        assert entry.seed("my-own") == seed_for("my-own")  # another name: other weights, not a duplicate
    assert tiny_model("t5_encoder").base is tiny_model("clip_embed").base is BaseModelType.Any
    assert tiny_model("vae", "flux").relative_path("tiny-flux-vae") == Path("tiny-flux-vae.safetensors")
    assert tiny_model("main").base is BaseModelType.StableDiffusion1  # several bases: sd-1, as before
    with pytest.raises(ValueError, match="no tiny t5_encoder model for base 'flux'; expected one of: any"):
        tiny_model("t5_encoder", "flux")


def test_install_tiny_takes_a_kinds_only_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    assert main(["models", "install-tiny", "clip_embed", "--model-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("installed 'tiny-flux-clip_embed': any clip_embed (diffusers)")
    config = ModelRegistry(str(tmp_path)).find("tiny-flux-clip_embed")
    assert (config.type, config.base, config.variant.value) == (ModelType.CLIPEmbed, BaseModelType.Any, "large")
