"""A single-file SD ControlNet (lllyasviel's original keys) installed beside the diffusers folder it was written
from: probed as an SD1 ControlNet checkpoint, it loads offline with a config read from its weights and steers
``denoise_latents`` exactly as the folder does."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers import edge, put_image, sd1_graph
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.binding import bind_model_fields

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]

PROMPT, SEED, STEPS, SIZE = "a red cat", 7, 3, 64


def hint() -> Image.Image:
    blocks = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8)))


def image(model_run, tiny_registry, controlnet: dict[str, Any] | None) -> np.ndarray:
    nodes = {"control": {"type": "controlnet", "image": {"image_name": "hint.png"}, "control_model": controlnet,
                         "control_weight": 0.8}} if controlnet else {}
    edges = [edge("control", "control", "denoise", "control")] if controlnet else []
    graph = sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE, extra_nodes=nodes,
                      extra_edges=edges)
    put_image(model_run, "hint.png", hint())
    [out] = run_graph(Graph.from_dict(bind_model_fields(graph, tiny_registry)), model_run).outputs_of("decode")
    data = model_run.store.read("images", out.image.image_name)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_a_single_file_controlnet_gives_its_folders_image(model_run, tiny_registry, tmp_path) -> None:
    from diffusers import ControlNetModel

    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.testing.tiny_install import install_tiny
    from invokeai_provider.models.testing.tiny_sd_controlnet import write_controlnet_file

    folder = install_tiny(tiny_registry, "controlnet", "sd-1", name="tiny-sd1-controlnet").config
    model = ControlNetModel.from_pretrained(tiny_registry.model_path(folder))
    path = write_controlnet_file(model, tmp_path / "control_sd15_tiny.safetensors")  # control_model.* keys
    single = install_model(tiny_registry, str(path), name="tiny-sd1-controlnet-file", inplace=True)
    assert (single.type.value, single.format.value, single.base.value) == ("controlnet", "checkpoint", "sd-1")
    from_file = image(model_run, tiny_registry, single.identifier())
    from_folder = image(model_run, tiny_registry, folder.identifier())
    # the same weights, loaded from a single file or from the folder: their tensors are laid out in memory
    # differently, which may change the CPU kernels' summation by a rounding step (1 level at most)
    assert np.abs(from_file.astype(int) - from_folder.astype(int)).max() <= 1, np.abs(from_file - from_folder).max()
    plain = image(model_run, tiny_registry, None)
    assert np.abs(from_file - plain).max() > 3  # it does steer the image
