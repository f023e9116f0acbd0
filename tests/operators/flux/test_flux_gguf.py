"""A GGUF FLUX.1 main (Q8_0, the tiny dev transformer's weights) with its T5 encoder, CLIP embed and VAE installed on
their own, in InvokeAI's text-to-image graph:

- it gives the image of diffusers' FluxPipeline whose transformer holds the same file's weights dequantized by the
  ``gguf`` package (converted by the same BFL converter), within 1 level; and the unquantized folder's image within
  4 levels (Q8_0's error; measured 1);
- a LoRA on it runs beside the quantized layers (sidecars, the single blocks' fused linear1 included): the pipeline
  with the LoRA merged into the dequantized weights gives its image within 1 level, and afterwards the quantized
  weights are byte for byte what they were and the plain image comes back exactly;
- a GGUF T5 encoder (llama.cpp's names, its tokenizer from --config) in place of the folder: the pipeline running that
  same quantized encoder gives the image within 1 level, and the folder T5's image is within 4 levels (measured 1).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import flux_graph
from invokeai_provider.core.context import RunContext
from invokeai_provider.core.taxonomy import SubModelType
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux import build_flux_lora, build_flux_model
from invokeai_provider.models.testing.tiny_flux_parts import build_clip_embed, build_flux_vae, build_t5_encoder
from invokeai_provider.models.testing.tiny_gguf import build_flux_gguf, build_t5_gguf, build_t5_tokenizer
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEED = 3
PROMPT = "a lighthouse in a storm, oil painting"  # flux_graph's
WIDTH, HEIGHT, STEPS, GUIDANCE = 32, 48, 2, 3.5  # flux_graph's


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManager, dict[str, Any]]:
    """The tiny dev main as a folder and as a GGUF file, its parts on their own (T5 also as GGUF) and a LoRA."""
    root = tmp_path_factory.mktemp("flux-gguf")
    registry = ModelRegistry(root.as_uri())
    built = {"folder": build_flux_model(root / "folder", variant="dev", seed=SEED),
             "gguf": build_flux_gguf(root / "flux1-dev-Q8_0.gguf", seed=SEED),
             "t5": build_t5_encoder(root / "t5", seed=SEED), "clip": build_clip_embed(root / "clip", seed=SEED),
             "vae": build_flux_vae(root / "ae.safetensors", seed=SEED),
             "lora": build_flux_lora(root / "lora.safetensors", style="aitoolkit", seed=9)}
    ids: dict[str, Any] = {name: install_model(registry, str(path), name=name, inplace=True).identifier()
                           for name, path in built.items()}
    t5_gguf = build_t5_gguf(root / "t5-Q8_0.gguf", seed=SEED)
    ids["t5_gguf"] = install_model(registry, str(t5_gguf), name="t5_gguf", inplace=True,
                                   config_path=str(build_t5_tokenizer(root / "t5-tokenizer"))).identifier()
    ids["paths"] = built
    return ModelManager(registry, device="cpu"), ids


def parts(ids: dict[str, Any], t5: str = "t5") -> dict[str, Any]:
    return {"t5_encoder_model": ids[t5], "clip_embed_model": ids["clip"], "vae_model": ids["vae"]}


def image_of(tmp_path: Path, manager: ModelManager, graph: dict[str, Any]) -> np.ndarray:
    run = RunContext(store=RunStore(LocalArtifactBackend(tmp_path), dag_id="flux", run_id="r1"),
                     services={"models": manager})
    [decoded] = run_graph(Graph.from_dict(graph), run).outputs_of("decode")
    image = Image.open(io.BytesIO(run.store.read("images", decoded.image.image_name)))
    return np.asarray(image).astype(np.int16)


def lora_graph(ids: dict[str, Any], seed: int) -> dict[str, Any]:
    """flux_graph with a flux_lora_loader (weight 0.8) between the loader's transformer and the denoiser."""
    graph = flux_graph(ids["gguf"], seed=seed, loader=parts(ids))
    graph["nodes"]["lora"] = {"id": "lora", "type": "flux_lora_loader", "lora": ids["lora"], "weight": 0.8}
    edges = []
    for edge in graph["edges"]:
        if edge["source"] == {"node_id": "load", "field": "transformer"}:
            edges.append({"source": edge["source"], "destination": {"node_id": "lora", "field": "transformer"}})
            edge = {**edge, "source": {"node_id": "lora", "field": "transformer"}}
        edges.append(edge)
    graph["edges"] = edges
    return graph


def dequantized_transformer(manager: ModelManager, ids: dict[str, Any]) -> Any:
    """The folder's transformer class and config holding the GGUF file's weights as the ``gguf`` package dequantizes
    them (float32), converted by the BFL converter."""
    import gguf

    from invokeai_provider.models.flux.bfl_transformer import to_diffusers

    reader = gguf.GGUFReader(str(ids["paths"]["gguf"]))
    plain = {t.name: torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()) for t in reader.tensors}
    with manager.load(ids["folder"], SubModelType.Transformer) as folder:
        model = type(folder).from_config(folder.config).eval()
    model.load_state_dict(to_diffusers(plain), strict=True)
    return model


def pipeline_image(manager: ModelManager, ids: dict[str, Any], transformer: Any, seed: int,
                   text_encoder_2: Any = None) -> np.ndarray:
    """FluxPipeline with the folder's encoders, tokenizers and VAE (``text_encoder_2`` in place of its T5)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from invokeai_provider.models.flux import sampling
    from invokeai_provider.models.testing.tiny_flux import SCHEDULERS

    components: dict[str, Any] = {"scheduler": FlowMatchEulerDiscreteScheduler(**SCHEDULERS["dev"])}
    for name in ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "vae"):
        with manager.load(ids["folder"], SubModelType(name)) as model:
            components[name] = model
    if text_encoder_2 is not None:
        components["text_encoder_2"] = text_encoder_2
    pipe = FluxPipeline(transformer=transformer, **components)
    with torch.no_grad():
        reference = pipe(PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                         latents=sampling.pack(sampling.noise(seed, HEIGHT, WIDTH)), max_sequence_length=512,
                         output_type="np").images[0]
    return np.floor(reference * 255).astype(np.int16)  # InvokeAI's conversion truncates


def test_a_gguf_main_gives_the_pipelines_image_of_its_dequantized_weights(
        tmp_path: Path, models: tuple[ModelManager, dict[str, Any]]) -> None:
    manager, ids = models
    ours = image_of(tmp_path / "gguf", manager, flux_graph(ids["gguf"], seed=11, loader=parts(ids)))
    theirs = pipeline_image(manager, ids, dequantized_transformer(manager, ids), 11)
    unquantized = image_of(tmp_path / "folder", manager, flux_graph(ids["folder"], seed=11))
    print(f"measured: vs FluxPipeline with the dequantized weights {np.abs(ours - theirs).max()} levels, vs the "
          f"unquantized folder {np.abs(ours - unquantized).max()} levels")
    assert ours.std() > 3
    assert np.abs(ours - theirs).max() <= 1
    assert np.abs(ours - unquantized).max() <= 4


def test_a_lora_on_the_gguf_main_runs_as_a_sidecar(tmp_path: Path,
                                                    models: tuple[ModelManager, dict[str, Any]]) -> None:
    from safetensors.torch import load_file

    from invokeai_provider.models.flux.lora_conversion import to_diffusers_names
    from invokeai_provider.models.quantization.gguf import quantized_modules

    manager, ids = models
    with manager.load(ids["gguf"], SubModelType.Transformer) as transformer:
        before = {name: tensor.clone() for name, tensor in transformer.state_dict().items()}
        fused = [name for name in quantized_modules(transformer) if name.startswith("single_transformer_blocks.")]
    plain = image_of(tmp_path / "plain", manager, flux_graph(ids["gguf"], seed=8, loader=parts(ids)))
    with_lora = image_of(tmp_path / "lora", manager, lora_graph(ids, seed=8))
    again = image_of(tmp_path / "again", manager, flux_graph(ids["gguf"], seed=8, loader=parts(ids)))
    assert np.abs(with_lora - plain).max() > 4 and np.array_equal(again, plain)
    with manager.load(ids["gguf"], SubModelType.Transformer) as transformer:
        after = transformer.state_dict()
        assert not any(module._forward_hooks for module in transformer.modules())
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

    lora = to_diffusers_names(load_file(str(ids["paths"]["lora"])))
    targets = {key.removeprefix("transformer.").removesuffix(".lora_A.weight") for key in lora
               if key.endswith(".lora_A.weight")}
    assert set(fused) & targets, "the LoRA should reach the single blocks' split linear1 layers"
    reference = dequantized_transformer(manager, ids)
    modules = dict(reference.named_modules())
    with torch.no_grad():  # merged by the LoRA formula: weight * alpha/rank * up @ down
        for target in targets:
            down, up = lora[f"transformer.{target}.lora_A.weight"], lora[f"transformer.{target}.lora_B.weight"]
            alpha = lora.get(f"transformer.{target}.alpha")
            scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
            modules[target].weight += 0.8 * scale * up.float() @ down.float()
    theirs = pipeline_image(manager, ids, reference, 8)
    print(f"measured: LoRA sidecar vs merged dequantized weights {np.abs(with_lora - theirs).max()} levels")
    assert np.abs(with_lora - theirs).max() <= 1


def test_a_gguf_t5_encoder_in_the_flux_graph(tmp_path: Path, models: tuple[ModelManager, dict[str, Any]]) -> None:
    from invokeai_provider.models.quantization.gguf import quantized_modules

    manager, ids = models
    ours = image_of(tmp_path / "t5-gguf", manager, flux_graph(ids["gguf"], seed=6, loader=parts(ids, "t5_gguf")))
    folder_t5 = image_of(tmp_path / "t5", manager, flux_graph(ids["gguf"], seed=6, loader=parts(ids)))
    with manager.load(ids["t5_gguf"], SubModelType.TextEncoder2) as encoder:
        assert quantized_modules(encoder)
        theirs = pipeline_image(manager, ids, dequantized_transformer(manager, ids), 6, text_encoder_2=encoder)
    print(f"measured: GGUF T5 vs FluxPipeline with it {np.abs(ours - theirs).max()} levels, vs the folder T5 "
          f"{np.abs(ours - folder_t5).max()} levels")
    assert np.abs(ours - theirs).max() <= 1
    assert np.abs(ours - folder_t5).max() <= 4
