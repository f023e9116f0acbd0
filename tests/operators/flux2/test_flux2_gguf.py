"""The FLUX.2 Klein nodes with the tiny GGUF main (``install-tiny main --base flux2 --format gguf``: the tiny Klein
transformer's weights as Q8_0, BFL's names) and the tiny main's Qwen3 encoder and VAE installed on their own give the
image of diffusers' ``Flux2KleinPipeline`` whose transformer diffusers itself loads from the same GGUF file
(``from_single_file`` with ``GGUFQuantizationConfig`` and the tiny folder's config), within 1 level (InvokeAI
truncates to uint8, diffusers rounds; measured 1); and the unquantized folder's image within 4 levels (Q8_0's error;
measured 2). The schedule is aligned as in test_flux2_parity (InvokeAI's fixed mu of 2.02)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_install import install_tiny
from test_flux2_parity import klein_graph, graph_image, pipeline_image, run_context

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny GGUF Klein main, the tiny Klein folder, and that folder's Qwen3 encoder and VAE on their own, as
    install-tiny installs them (one seed: tiny-flux2's)."""
    registry = ModelRegistry(tmp_path_factory.mktemp("flux2-gguf").as_uri())
    done = {name: install_tiny(registry, kind, "flux2", **extra).config
            for name, kind, extra in (("gguf", "main", {"format": "gguf"}), ("folder", "main", {}),
                                      ("qwen3", "qwen3_encoder", {}), ("vae", "vae", {}))}
    return {"manager": ModelManager(registry, device="cpu"), "configs": done,
            "paths": {name: registry.model_path(config) for name, config in done.items()}}


def test_the_gguf_klein_main_gives_the_pipelines_image_with_diffusers_gguf_transformer(
        tmp_path: Path, installed: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel, GGUFQuantizationConfig

    configs, paths = installed["configs"], installed["paths"]
    assert (configs["gguf"].name, configs["gguf"].format.value) == ("tiny-flux2-gguf", "gguf_quantized")
    nodes, edges = klein_graph(configs["gguf"].identifier())
    nodes["loader"] |= {"qwen3_encoder_model": configs["qwen3"].identifier(), "vae_model": configs["vae"].identifier()}
    ours = graph_image(run_context(tmp_path / "gguf", installed["manager"]), nodes, edges)

    transformer = Flux2Transformer2DModel.from_single_file(
        str(paths["gguf"]), config=str(paths["folder"]), subfolder="transformer", local_files_only=True,
        torch_dtype=torch.float32, quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32)).eval()
    assert any(getattr(m.weight, "quant_type", None) is not None for m in transformer.modules()
               if isinstance(m, torch.nn.Linear))  # diffusers' own GGUF layers, not a dequantized copy
    pipe = Flux2KleinPipeline.from_pretrained(paths["folder"], transformer=transformer, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipeline_image(pipe, monkeypatch)
    unquantized = graph_image(run_context(tmp_path / "folder", installed["manager"]),
                              *klein_graph(configs["folder"].identifier()))
    print(f"measured: vs diffusers' GGUF Flux2KleinPipeline {np.abs(ours - theirs).max()} levels, vs the unquantized "
          f"folder {np.abs(ours - unquantized).max()} levels")
    assert ours.std() > 5
    assert np.abs(ours - theirs).max() <= 1
    assert np.abs(ours - unquantized).max() <= 4
