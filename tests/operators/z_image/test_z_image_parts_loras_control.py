"""Z-Image models that change what the nodes load: a single-file transformer with a standalone Qwen3 encoder and
VAE (the folder's image, exactly), LoRAs on the transformer and the Qwen3 encoder (the image of the merged weights,
weights restored after), and a ControlNet (ZImageControlNetPipeline's image within 1 level; scale 0 or a step range
that never starts gives the plain image).

ControlNet parity: the pipeline gets the same tiny ControlNet built from the same seed (not read back from the file, so
the loader's reading of the file's shapes is checked too), the control image at the output size (no resize on either
side), InvokeAI's noise and the resolution-shifted scheduler; 64x128 is 32 image tokens, so no pad token is drawn (the
pad token is the one part where InvokeAI's own adapter and diffusers' ControlNet differ). Measured: 1 level for the
ControlNet and for the LoRAs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from helpers import put_image
from z_image_helpers import PROMPT, dynamic_scheduler, link, pipeline_image, pipeline_parts, t2i_graph

from invokeai_provider.core.context import RunContext
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.testing import tiny_z_image as tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEED = 3  # the session's tiny-z-image


@pytest.fixture(scope="module")
def extras(z_image: Any, z_image_parts: dict[str, Any],
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The main's parts as separate models (same seed: its own weights), a LoRA of each format and a ControlNet."""
    registry = z_image[0].registry
    folder = tmp_path_factory.mktemp("z-image-extras")
    built = {"single": tiny.build_z_image_checkpoint(folder / "z-image-turbo.safetensors", seed=SEED,
                                                      prefix="model.diffusion_model."),
             "peft": tiny.build_z_image_lora(folder / "peft.safetensors", style="diffusers", seed=6,
                                             text_encoder=True),
             "control": tiny.build_z_image_controlnet(folder / "control.safetensors", seed=SEED)}
    installed = {name: install_model(registry, str(path), name=f"z-{name}").identifier()
                 for name, path in built.items()}
    return {**installed, **{name: z_image_parts[name] for name in ("qwen3", "vae", "kohya")}}


def test_a_single_file_transformer_with_separate_parts_gives_the_folders_image(
        run_t2i: Callable[..., np.ndarray], z_run: RunContext, extras: dict[str, dict[str, Any]]) -> None:
    from invokeai_provider.errors import NodeExecutionError

    folder = run_t2i(seed=12)
    parts = {"qwen3_encoder_model": extras["qwen3"], "vae_model": extras["vae"]}
    single = run_t2i(graph=t2i_graph(extras["single"], seed=12, loader=parts))
    assert np.array_equal(folder, single)
    with pytest.raises(NodeExecutionError, match="No VAE source provided") as caught:
        run_t2i(graph=t2i_graph(extras["single"], loader={"qwen3_encoder_model": extras["qwen3"]}))
    assert caught.value.field == "vae_model"
    source = {"qwen3_source_model": extras["single"]}
    with pytest.raises(NodeExecutionError, match="Qwen3 Source must be a Diffusers-style") as caught:
        run_t2i(graph=t2i_graph(extras["single"], loader={"qwen3_encoder_model": extras["qwen3"], **source}))
    assert caught.value.field == "qwen3_source_model"
    ignored = run_t2i(graph=t2i_graph(extras["single"], seed=12, loader={**parts, **source}))
    assert np.array_equal(ignored, folder)  # both parts selected: the source is ignored, as in InvokeAI


def lora_graph(identifier: dict[str, Any], loras: list[tuple[dict[str, Any], float]], **denoise: Any
               ) -> dict[str, Any]:
    """The text-to-image graph with z_image_lora_loader nodes chained between the loader and its users."""
    graph = t2i_graph(identifier, **denoise)
    source = "load"
    for number, (lora, weight) in enumerate(loras):
        node = f"lora{number}"
        graph["nodes"][node] = {"id": node, "type": "z_image_lora_loader", "lora": lora, "weight": weight}
        graph["edges"] += [link(source, "transformer", node), link(source, "qwen3_encoder", node)]
        source = node
    for edge in graph["edges"]:
        if edge["source"] == {"node_id": "load", "field": "transformer"} and edge["destination"]["node_id"] == \
                "denoise":
            edge["source"]["node_id"] = source
        if edge["source"] == {"node_id": "load", "field": "qwen3_encoder"} and edge["destination"]["node_id"] == \
                "prompt":
            edge["source"]["node_id"] = source
    return graph


def merged(model: torch.nn.Module, lora: dict[str, torch.Tensor], owner: str, weight: float) -> torch.nn.Module:
    """A copy of ``model`` with the LoRA merged in by its formula (``weight * alpha/rank * up @ down``)."""
    import copy

    from invokeai_provider.models.z_image.lora_conversion import to_diffusers_names

    model = copy.deepcopy(model)
    state = model.state_dict()
    names = to_diffusers_names(lora)
    for key in names:
        if not key.startswith(f"{owner}.") or not key.endswith(("lora_down.weight", "lora_A.weight")):
            continue
        stem, up_key = (key[:-len(".lora_down.weight")], "lora_up.weight") if key.endswith("lora_down.weight") else \
            (key[:-len(".lora_A.weight")], "lora_B.weight")
        down, up = names[key], names[f"{stem}.{up_key}"]
        alpha = names.get(f"{stem}.alpha")
        scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
        state[f"{stem[len(owner) + 1:]}.weight"] += weight * scale * up @ down
    return model


def test_loras_give_the_merged_weights_image_and_are_removed_after(
        run_t2i: Callable[..., np.ndarray], z_image: Any, extras: dict[str, dict[str, Any]]) -> None:
    from diffusers import ZImagePipeline
    from safetensors.torch import load_file

    from invokeai_provider.models.z_image import sampling

    manager, identifier = z_image
    plain = run_t2i(seed=8)
    with_loras = run_t2i(graph=lora_graph(identifier, [(extras["kohya"], 0.8), (extras["peft"], 0.6)], seed=8))
    assert np.abs(with_loras - plain).max() > 4
    assert np.array_equal(run_t2i(seed=8), plain)  # the cached weights were restored
    assert np.array_equal(run_t2i(graph=lora_graph(identifier, [(extras["kohya"], 0.0)], seed=8)), plain)

    parts = pipeline_parts(manager, identifier)
    files = {name: load_file(str(manager.registry.root / manager.get_config(extras[name]).path))
             if not Path(manager.get_config(extras[name]).path).is_absolute()
             else load_file(manager.get_config(extras[name]).path) for name in ("kohya", "peft")}
    transformer = merged(merged(parts["transformer"], files["kohya"], "transformer", 0.8), files["peft"],
                         "transformer", 0.6)
    encoder = merged(parts["text_encoder"], files["peft"], "text_encoder", 0.6)
    pipe = ZImagePipeline(scheduler=dynamic_scheduler(), **{**parts, "transformer": transformer,
                                                            "text_encoder": encoder})
    theirs = pipeline_image(pipe(PROMPT, height=64, width=128, num_inference_steps=3, guidance_scale=0.0,
                                 latents=sampling.noise(8, 64, 128), output_type="np").images)
    print(f"measured: {np.abs(with_loras - theirs).max()} levels")
    assert np.abs(with_loras - theirs).max() <= 1


def test_the_collection_loader_applies_each_lora_once(z_run: RunContext, z_image: Any,
                                                      extras: dict[str, dict[str, Any]]) -> None:
    _, identifier = z_image
    loras = [{"lora": extras["kohya"], "weight": 0.5}, {"lora": extras["peft"], "weight": 0.7},
             {"lora": extras["kohya"], "weight": 0.9}]
    graph = {"id": "g", "nodes": {"load": {"id": "load", "type": "z_image_model_loader", "model": identifier},
                                  "loras": {"id": "loras", "type": "z_image_lora_collection_loader", "loras": loras}},
             "edges": [link("load", "transformer", "loras"), link("load", "qwen3_encoder", "loras")]}
    [out] = run_graph(Graph.from_dict(graph), z_run).outputs_of("loras")
    for field in (out.transformer, out.qwen3_encoder):
        assert [(lora.lora.key, lora.weight) for lora in field.loras] == [(extras["kohya"]["key"], 0.5),
                                                                          (extras["peft"]["key"], 0.7)]


def control_graph(identifier: dict[str, Any], control: dict[str, Any], image: dict[str, str], *,
                  vae: bool = True, **fields: Any) -> dict[str, Any]:
    graph = t2i_graph(identifier, seed=6)
    graph["nodes"]["control"] = {"id": "control", "type": "z_image_control", "image": image,
                                 "control_model": control, **fields}
    graph["edges"].append(link("control", "control", "denoise"))
    if vae:
        graph["edges"].append(link("load", "vae", "denoise"))
    return graph


def test_a_controlnet_gives_the_control_pipelines_image(run_t2i: Callable[..., np.ndarray], z_run: RunContext,
                                                        z_image: Any, extras: dict[str, dict[str, Any]]) -> None:
    from diffusers import ZImageControlNetPipeline
    from PIL import Image

    from invokeai_provider.errors import NodeExecutionError
    from invokeai_provider.models.z_image import sampling

    manager, identifier = z_image
    pattern = np.zeros((64, 128, 3), np.uint8)
    pattern[16:48, 24:104] = 255
    pattern[28:36, :] = 128
    image = put_image(z_run, "control.png", pattern)
    mine = run_t2i(graph=control_graph(identifier, extras["control"], image, control_context_scale=0.75))
    plain = run_t2i(seed=6)
    assert np.abs(mine - plain).max() > 4

    pipe = ZImageControlNetPipeline(scheduler=dynamic_scheduler(), controlnet=tiny._controlnet(SEED, 16),
                                    **pipeline_parts(manager, identifier))
    theirs = pipeline_image(pipe(PROMPT, control_image=Image.fromarray(pattern), controlnet_conditioning_scale=0.75,
                                 height=64, width=128, num_inference_steps=3, guidance_scale=0.0,
                                 latents=sampling.noise(6, 64, 128), output_type="np").images)
    difference = np.abs(mine - theirs).max()
    print(f"measured: {difference} levels")
    assert difference <= 1, f"differs from ZImageControlNetPipeline's image by {difference} levels"

    off = run_t2i(graph=control_graph(identifier, extras["control"], image, control_context_scale=0.0))
    late = run_t2i(graph=control_graph(identifier, extras["control"], image, begin_step_percent=0.9))
    assert np.array_equal(off, plain) and np.array_equal(late, plain)
    with pytest.raises(NodeExecutionError, match="VAE is required when using Z-Image Control") as caught:
        run_t2i(graph=control_graph(identifier, extras["control"], image, vae=False))
    assert caught.value.field == "vae"


def test_a_qwen3_encoder_of_another_size_is_refused_naming_its_field(
        z_run: RunContext, z_image: Any, tmp_path: Path) -> None:
    from invokeai_provider.errors import NodeExecutionError
    from invokeai_provider.models.testing.tiny_qwen3 import qwen3_encoder, qwen3_tokenizer

    manager, identifier = z_image
    folder = tmp_path / "qwen3-0.6b"
    qwen3_encoder(1, layers=2, width=1024, tag="z-image/qwen3-06b").save_pretrained(folder / "text_encoder")
    qwen3_tokenizer().save_pretrained(folder / "tokenizer")
    small = install_model(manager.registry, str(folder), name="qwen3-06b").identifier()
    assert small["type"] == "qwen3_encoder"
    graph = t2i_graph(identifier, loader={"qwen3_encoder_model": small})
    with pytest.raises(NodeExecutionError, match="Z-Image reads Qwen3-4B's embeddings .*qwen3_06b") as caught:
        run_graph(Graph.from_dict(graph), z_run)
    assert caught.value.node_id == "load" and caught.value.field == "qwen3_encoder_model"


def test_a_v2_controlnet_takes_the_latents_a_reference_and_a_mask_channel(tmp_path: Path) -> None:
    """Alibaba's 2.0 files take 33 channels: the control latents, 16 reference channels (zeros: no inpainting) and
    an inpaint-mask channel of ones, as InvokeAI pads them; the config is read from the file's shapes."""
    from invokeai_provider.models.testing.tiny_flux import _vae
    from invokeai_provider.models.z_image.control import ZImageControl, control_latents, load_controlnet

    model = load_controlnet(tiny.build_z_image_controlnet(tmp_path / "v2.safetensors", control_in_dim=33),
                            torch.float32)
    assert (model.config.control_in_dim, model.config.control_layers_places) == (33, [0, 2])
    assert model.config.add_control_noise_refiner is None and model.config.dim == tiny.DIM
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    latents = control_latents(_vae(0), image, 33)
    assert latents.shape == (33, 1, 4, 6)
    assert torch.equal(latents[16:32], torch.zeros(16, 1, 4, 6)) and torch.equal(latents[32], torch.ones(1, 4, 6))
    assert latents[:16].abs().sum() > 0
    control = ZImageControl(model=model, latents=latents, begin=0.25, end=0.5)
    assert [control.applies(step, 8) for step in range(8)] == [False, False, True, True, True, False, False, False]
