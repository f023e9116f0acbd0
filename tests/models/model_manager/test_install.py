"""Installing and looking up models: local copy and in-place, hashes, URL and hub refusals, the CLI."""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from invokeai_provider.cli.app import main
from invokeai_provider.models.model_manager.hashing import model_hash
from invokeai_provider.models.model_manager.install import InstallError, install_model
from invokeai_provider.models.model_manager.probe import PickleRefusedError
from invokeai_provider.models.model_manager.registry import AmbiguousModelError, ModelRegistry, UnknownModelError

SD_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"


def checkpoint(path: Path, fill: float = 0.0) -> Path:
    save_file({SD_KEY: torch.full((8, 768), fill), IN_KEY: torch.zeros(8, 4, 3, 3)}, str(path))
    return path


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry((tmp_path / "root").as_uri())


def test_install_copies_hashes_and_registers(registry, tmp_path):
    source = checkpoint(tmp_path / "dream.safetensors")
    config = install_model(registry, str(source))
    assert config.name == "dream" and config.base.value == "sd-1" and config.type.value == "main"
    assert config.hash == model_hash(source) and config.hash.startswith("blake3:")
    stored = registry.model_path(config)
    assert stored != source and stored.read_bytes() == source.read_bytes()
    assert registry.get(config.key) == config and registry.find("dream") == config
    record = json.loads((registry.root / "records" / f"{config.key}.json").read_text())
    assert record["hash"] == config.hash and record["path"].startswith("files/")


def test_install_in_place_keeps_the_path(registry, tmp_path):
    source = checkpoint(tmp_path / "here.safetensors")
    config = install_model(registry, str(source), inplace=True, name="Here")
    assert registry.model_path(config) == source.resolve() and config.installed_in_place


def test_remove_deletes_installed_files_but_not_in_place_ones(registry, tmp_path):
    copied = install_model(registry, str(checkpoint(tmp_path / "copied.safetensors")))
    in_place_source = checkpoint(tmp_path / "mine.safetensors", fill=1.0)
    in_place = install_model(registry, str(in_place_source), inplace=True)
    stored = registry.model_path(copied)
    registry.remove(copied.key)
    registry.remove(in_place.key)
    assert not stored.exists() and list(registry.all()) == []
    assert in_place_source.is_file()
    with pytest.raises(UnknownModelError):
        registry.get(copied.key)


def test_same_model_twice_is_refused(registry, tmp_path):
    source = checkpoint(tmp_path / "a.safetensors")
    install_model(registry, str(source))
    with pytest.raises(InstallError, match="already installed as 'a'"):
        install_model(registry, str(source), name="again")


def test_folder_hash_ignores_non_weight_files(tmp_path):
    folder = tmp_path / "pipe"
    (folder / "unet").mkdir(parents=True)
    save_file({"w": torch.ones(2)}, str(folder / "unet" / "w.safetensors"))
    before = model_hash(folder)
    (folder / "README.md").write_text("notes")
    assert model_hash(folder) == before
    save_file({"w": torch.zeros(2)}, str(folder / "unet" / "w.safetensors"))
    assert model_hash(folder) != before


def test_failed_install_leaves_nothing(registry, tmp_path):
    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": {SD_KEY: torch.zeros(8, 768)}}, ckpt)
    with pytest.raises(PickleRefusedError):
        install_model(registry, str(ckpt))
    assert list(registry.all()) == [] and not (registry.root / "files").exists()


def test_lookup_by_identifier_from_another_install(registry, tmp_path):
    config = install_model(registry, str(checkpoint(tmp_path / "m.safetensors")), name="My Model")
    exported = {"key": "key-from-elsewhere", "hash": config.hash, "name": "whatever", "base": "sd-1", "type": "main"}
    assert registry.resolve(exported) == config
    by_name = {"key": "other", "hash": "blake3:00", "name": "My Model", "base": "sd-1", "type": "main"}
    assert registry.resolve(by_name) == config
    assert registry.resolve(config.key) == config and registry.resolve("My Model") == config
    with pytest.raises(UnknownModelError, match="is not registered here"):
        registry.resolve({"key": "x", "hash": "blake3:ff", "name": "Nope", "base": "sd-1", "type": "main"})
    with pytest.raises(UnknownModelError, match=r"an identifier with a key, hash or name; got \{\}"):
        registry.resolve({})


def test_ambiguous_names_need_a_key(registry, tmp_path):
    install_model(registry, str(checkpoint(tmp_path / "a.safetensors", 1.0)), name="same")
    install_model(registry, str(checkpoint(tmp_path / "b.safetensors", 2.0)), name="same")
    with pytest.raises(AmbiguousModelError, match="matches several models"):
        registry.find("same")


def test_private_urls_are_refused_unless_allowed(registry, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    checkpoint(served / "web.safetensors")
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/web.safetensors"
        with pytest.raises(InstallError, match="private address"):
            install_model(registry, url)
        config = install_model(registry, url, allow_private_urls=True)
        assert config.source == url and config.source_type.value == "url" and config.name == "web"
    finally:
        server.shutdown()
        server.server_close()


def test_hub_repo_ids_fail_clearly_offline(registry, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InstallError, match="Hugging Face hub cannot be reached"):
        install_model(registry, "someone/some-model")


def test_models_cli_install_and_list(tmp_path, capsys):
    root = (tmp_path / "root").as_uri()
    source = checkpoint(tmp_path / "cli.safetensors")
    assert main(["models", "install", str(source), "--name", "CLI model", "--model-root", root]) == 0
    assert "installed 'CLI model': sd-1 main (checkpoint)" in capsys.readouterr().out
    assert main(["models", "list", "--json", "--model-root", root]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["name"] == "CLI model" and listed["base"] == "sd-1"
    assert main(["models", "install", str(tmp_path / "missing"), "--model-root", root]) == 1
    assert "not an existing path" in capsys.readouterr().err
