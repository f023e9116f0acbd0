"""FLUX Redux graphs in InvokeAI's node shapes (flux_redux -> flux_denoise's redux_conditioning) against diffusers'
FluxPriorReduxPipeline feeding FluxPipeline, with the tiny models that ``install-tiny siglip`` and ``install-tiny
flux_redux --base flux`` install; downsampling and weight in the stored tokens; lists of Redux conditionings; errors
naming the field (a wrong model, no SigLIP installed, masked or ill-shaped Redux conditioning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import edge, node, put_image, run_nodes, stored_image
from invokeai_provider.core.context import RunContext
from invokeai_provider.core.fields import ModelIdentifierField
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux import build_flux_model
from invokeai_provider.models.testing.tiny_install import install_tiny
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a lighthouse in a storm, oil painting"
HEIGHT, WIDTH, STEPS, GUIDANCE, SEED = 64, 48, 3, 3.5, 13


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManager, dict[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("flux-redux-root")
    registry = ModelRegistry(root.as_uri())
    dev = install_model(registry, str(build_flux_model(root / "dev", seed=2)), name="tiny-flux", inplace=True)
    siglip = install_tiny(registry, "siglip").config
    redux = install_tiny(registry, "flux_redux", "flux").config
    assert (siglip.name, siglip.base.value, redux.name, redux.base.value) == (
        "tiny-flux-siglip", "any", "tiny-flux-flux_redux", "flux")
    return ModelManager(registry, device="cpu"), {"dev": dev.identifier(), "siglip": siglip.identifier(),
                                                  "redux": redux.identifier()}


def run_in(tmp_path: Path, manager: ModelManager) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="flux", run_id="r1"),
                      services={"models": manager})


@pytest.fixture
def run(tmp_path: Path, models: tuple[ModelManager, dict[str, Any]]) -> RunContext:
    return run_in(tmp_path, models[0])


def picture(seed: int, height: int = 72, width: int = 56) -> Image.Image:
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return Image.fromarray((smooth[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))


def stored_tensor(run: RunContext, name: str) -> torch.Tensor:
    from safetensors.torch import load

    return load(run.store.read("tensors", f"{name}.safetensors"))["tensor"]


def put_tensor(run: RunContext, name: str, tensor: torch.Tensor) -> str:
    from safetensors.torch import save

    run.store.write("tensors", f"{name}.safetensors", save({"tensor": tensor.contiguous()}))
    return name


def generation(installed: dict[str, Any], **denoise: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The FLUX text-to-image graph with a Redux image prompt (image ``hint.png``) on flux_denoise."""
    nodes = {
        "load": node("load", "flux_model_loader", model=installed["dev"]),
        "prompt": node("prompt", "flux_text_encoder", prompt=PROMPT),
        "redux": node("redux", "flux_redux", image={"image_name": "hint.png"}, redux_model=installed["redux"]),
        "denoise": node("denoise", "flux_denoise", seed=SEED, num_steps=STEPS, width=WIDTH, height=HEIGHT,
                        guidance=GUIDANCE, **denoise),
        "decode": node("decode", "flux_vae_decode")}
    edges = [edge("load", "clip", "prompt", "clip"), edge("load", "t5_encoder", "prompt", "t5_encoder"),
             edge("load", "max_seq_len", "prompt", "t5_max_seq_len"),
             edge("load", "transformer", "denoise", "transformer"),
             edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
             edge("redux", "redux_cond", "denoise", "redux_conditioning"),
             edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")]
    return {k: {kk: vv for kk, vv in v.items() if kk != "id"} for k, v in nodes.items()}, edges


def reference_image(manager: ModelManager, installed: dict[str, Any], hint: Image.Image) -> np.ndarray:
    """diffusers' FluxPriorReduxPipeline (SigLIP, Redux, the prompt) feeding FluxPipeline, with the installed
    models."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxPriorReduxPipeline

    from invokeai_provider.core.taxonomy import SubModelType
    from invokeai_provider.models.flux import sampling
    from invokeai_provider.models.testing.tiny_flux import SCHEDULERS

    dev = ModelIdentifierField.model_validate(installed["dev"])
    parts: dict[str, Any] = {"scheduler": FlowMatchEulerDiscreteScheduler(**SCHEDULERS["dev"])}
    for name in ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "transformer", "vae"):
        with manager.load(dev, SubModelType(name)) as model:
            parts[name] = model
    with manager.load(ModelIdentifierField.model_validate(installed["siglip"])) as siglip, \
            manager.load(ModelIdentifierField.model_validate(installed["redux"])) as redux:
        encoders = {k: parts[k] for k in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
        prior = FluxPriorReduxPipeline(image_encoder=siglip.model, feature_extractor=siglip.processor,
                                       image_embedder=redux, **encoders)(hint, prompt=PROMPT)
    image = FluxPipeline(**parts)(
        prompt_embeds=prior.prompt_embeds, pooled_prompt_embeds=prior.pooled_prompt_embeds, height=HEIGHT,
        width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
        latents=sampling.pack(sampling.noise(SEED, HEIGHT, WIDTH)), generator=torch.Generator().manual_seed(0),
        output_type="np").images[0]
    return np.floor(image * 255).astype(np.int16)  # InvokeAI's conversion truncates


def pixels(run: RunContext, state: Any) -> np.ndarray:
    return np.asarray(stored_image(run, state.outputs_of("decode")[0]).convert("RGB")).astype(np.int16)


def test_a_redux_graph_gives_the_redux_pipelines_image(run: RunContext, models: Any) -> None:
    manager, installed = models
    hint = picture(7)
    put_image(run, "hint.png", hint)
    nodes, edges = generation(installed)
    state = run_nodes(run, nodes, edges)
    [out] = state.outputs_of("redux")
    tokens = stored_tensor(run, out.redux_cond.conditioning.tensor_name)
    assert tokens.shape == (1, 256, 4096) and tokens.device.type == "cpu" and out.redux_cond.mask is None
    mine = pixels(run, state)
    difference = np.abs(mine - reference_image(manager, installed, hint)).max()
    assert difference <= 1, f"the Redux graph differs from diffusers' Redux pipelines by {difference} levels"
    without = [e for e in edges if e["source"]["node_id"] != "redux"]
    plain = pixels(run, run_nodes(run, {k: v for k, v in nodes.items() if k != "redux"}, without))
    assert np.abs(plain - mine).max() > 3  # the image prompt shows (8 levels here; parity is within 1)

    # two Redux conditionings: both token sets follow the prompt, each moving the image
    twice = {**nodes["denoise"], "redux_conditioning": [out.redux_cond.model_dump(), out.redux_cond.model_dump()]}
    doubled = pixels(run, run_nodes(run, {**{k: v for k, v in nodes.items() if k != "redux"}, "denoise": twice},
                                    without))
    assert np.abs(doubled - mine).max() > 1  # beyond the parity tolerance


def test_downsampling_and_weight_shape_the_stored_tokens(run: RunContext, models: Any) -> None:
    from invokeai_provider.models.flux.redux import downsample_and_weight

    _, installed = models
    put_image(run, "hint.png", picture(8))
    full = {"type": "flux_redux", "image": {"image_name": "hint.png"}, "redux_model": installed["redux"]}
    shrunk = {**full, "downsampling_factor": 4, "downsampling_function": "bilinear", "weight": 0.5}
    state = run_nodes(run, {"full": full, "shrunk": shrunk})
    [whole], [small] = state.outputs_of("full"), state.outputs_of("shrunk")
    whole_tokens = stored_tensor(run, whole.redux_cond.conditioning.tensor_name)
    small_tokens = stored_tensor(run, small.redux_cond.conditioning.tensor_name)
    assert small_tokens.shape == (1, 16, 4096)  # 16x16 -> 4x4
    assert torch.allclose(small_tokens, downsample_and_weight(whole_tokens, 4, "bilinear", 0.5), atol=1e-6)
    with pytest.raises(Exception, match="downsampling_factor"):  # InvokeAI's 1..9
        run_nodes(run, {"bad": {**full, "downsampling_factor": 10}})


def test_errors_name_the_field(run: RunContext, models: Any, tmp_path: Path) -> None:
    manager, installed = models
    put_image(run, "hint.png", picture(9))
    nodes, edges = generation(installed)
    with pytest.raises(NodeExecutionError, match="field redux_model: expected a flux_redux model"):
        run_nodes(run, {**nodes, "redux": {**nodes["redux"], "redux_model": installed["dev"]}}, edges)
    mask = put_tensor(run, "region", torch.ones(1, HEIGHT, WIDTH, dtype=torch.bool))
    with pytest.raises(NodeExecutionError, match="field redux_conditioning: masked \\(regional\\) Redux"):
        run_nodes(run, {**nodes, "redux": {**nodes["redux"], "mask": {"tensor_name": mask}}}, edges)
    narrow = put_tensor(run, "narrow", torch.zeros(1, 4, 768))
    bare = {k: v for k, v in nodes.items() if k != "redux"}
    bare["denoise"] = {**nodes["denoise"], "redux_conditioning": {"conditioning": {"tensor_name": narrow}}}
    with pytest.raises(NodeExecutionError, match=r"field redux_conditioning: Redux conditioning 0: tokens of shape "
                                                 r"\(1, 4, 768\)"):
        run_nodes(run, bare, [e for e in edges if e["source"]["node_id"] != "redux"])

    # a model root with the Redux model but no SigLIP: InvokeAI would download it; here the error says what to do
    bare_registry = ModelRegistry((tmp_path / "no-siglip").as_uri())
    redux_file = manager.registry.get(installed["redux"]["key"]).path
    alone = install_model(bare_registry, redux_file, name="redux", inplace=True).identifier()
    lonely = run_in(tmp_path / "lonely", ModelManager(bare_registry, device="cpu"))
    put_image(lonely, "hint.png", picture(9))
    with pytest.raises(NodeExecutionError, match="field redux_model: FLUX Redux's SigLIP encoder: no siglip "
                                                 "model is installed, and it cannot be downloaded here; install "
                                                 "google/siglip-so400m"):
        run_nodes(lonely, {"redux": {**nodes["redux"], "redux_model": alone}})


def test_the_node_has_invokeais_shape() -> None:
    from invokeai_provider.core.invocation import Classification
    from invokeai_provider.core.registry import InvocationRegistry

    cls = InvocationRegistry.get_invocation_class("flux_redux")
    assert (cls.UIConfig.version, cls.get_output_annotation().get_type()) == ("2.1.0", "flux_redux_output")
    assert cls.UIConfig.classification is Classification.Beta
    fields = cls.model_fields
    assert {name: fields[name].default for name in ("mask", "downsampling_factor", "downsampling_function",
                                                    "weight")} == {"mask": None, "downsampling_factor": 1,
                                                                   "downsampling_function": "area", "weight": 1.0}
    assert {"image", "redux_model"} <= set(fields)
    assert set(cls.get_output_annotation().model_fields) >= {"redux_cond"}
