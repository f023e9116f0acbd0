"""Bundled diffusers configs: they describe the public architectures exactly, diffusers converts single-file
checkpoints with them offline, and the model manager uses them when a checkpoint was installed without --config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from accelerate import init_empty_weights
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from helpers import sd1_graph
from invokeai_provider.models.stable_diffusion import arch_configs
from invokeai_provider.models.testing import tiny
from invokeai_provider.core.taxonomy import BaseModelType, ModelVariantType, SchedulerPredictionType

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")

P = arch_configs.PUBLIC_PARAMS
INPAINT_EXTRA = 5 * 320 * 3 * 3  # conv_in takes 9 channels instead of 4: 5 more 3x3 input planes for 320 outputs
# (base, variant, prediction) -> expected parameters per component; diffusers' own checkpoint detector's verdict
ARCHS: dict[tuple[str, str, str], tuple[dict[str, int], str]] = {
    ("sd-1", "normal", "epsilon"): ({"unet": P["sd15_unet"], "vae": P["vae"], "text_encoder": P["clip_l"]}, "v1"),
    ("sd-1", "inpaint", "epsilon"): (
        {"unet": P["sd15_unet"] + INPAINT_EXTRA, "vae": P["vae"], "text_encoder": P["clip_l"]}, "inpainting"),
    ("sd-2", "normal", "v_prediction"): (
        {"unet": P["sd2_unet"], "vae": P["vae"], "text_encoder": P["openclip_h"]}, "v2"),
    ("sd-2", "inpaint", "epsilon"): (
        {"unet": P["sd2_unet"] + INPAINT_EXTRA, "vae": P["vae"], "text_encoder": P["openclip_h"]}, "inpainting_v2"),
    ("sdxl", "normal", "epsilon"): (
        {"unet": P["sdxl_unet"], "vae": P["vae"], "text_encoder": P["clip_l"], "text_encoder_2": P["openclip_bigg"]},
        "xl_base"),
    ("sdxl", "inpaint", "epsilon"): (
        {"unet": P["sdxl_unet"] + INPAINT_EXTRA, "vae": P["vae"], "text_encoder": P["clip_l"],
         "text_encoder_2": P["openclip_bigg"]}, "xl_inpaint"),
    ("sdxl-refiner", "normal", "epsilon"): (
        {"unet": P["sdxl_refiner_unet"], "vae": P["vae"], "text_encoder_2": P["openclip_bigg"]}, "xl_refiner"),
}
PIPELINE = {"sd-1": "StableDiffusionPipeline", "sd-2": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline",
            "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline"}
# where the original LDM/SGM checkpoints keep each text encoder, and in which layout
LDM_TEXT = {"sd-1": {"text_encoder": ("clip", "cond_stage_model.transformer.")},
            "sd-2": {"text_encoder": ("openclip", "cond_stage_model.model.")},
            "sdxl": {"text_encoder": ("clip", "conditioner.embedders.0.transformer."),
                     "text_encoder_2": ("openclip", "conditioner.embedders.1.model.")},
            "sdxl-refiner": {"text_encoder_2": ("openclip", "conditioner.embedders.0.model.")}}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], Path]:
    root = tmp_path_factory.mktemp("arch-configs")
    return {arch: arch_configs.write_pipeline_config(BaseModelType(arch[0]), ModelVariantType(arch[1]),
                                                     SchedulerPredictionType(arch[2]), root / "-".join(arch))
            for arch in ARCHS}


def _meta_components(folder: Path) -> dict[str, Any]:
    """The folder's models, built from its configs alone on the meta device (no memory, no weights)."""
    models: dict[str, Any] = {}
    with init_empty_weights():
        for name, cls in (("unet", diffusers.UNet2DConditionModel), ("vae", diffusers.AutoencoderKL)):
            models[name] = cls.from_config(cls.load_config(folder / name))
        for name in ("text_encoder", "text_encoder_2"):
            if (folder / name).is_dir():
                config = CLIPTextConfig.from_pretrained(folder / name)
                cls = CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel
                models[name] = cls(config)
    return models


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


# --- (a) the configs are the public architectures ---------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS, ids="-".join)
def test_configs_build_the_public_architectures(written: dict, arch: tuple[str, str, str]) -> None:
    folder = written[arch]
    expected, _ = ARCHS[arch]
    models = _meta_components(folder)
    assert {name: _params(m) for name, m in models.items()} == expected
    assert all(p.device.type == "meta" for m in models.values() for p in m.parameters())
    assert not [p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin")]  # configs only


def test_public_parameter_counts_are_the_known_ones() -> None:
    """The counts published for these models (and the OpenCLIP-H one worked out by hand), pinned against edits."""
    hidden, ffn, layers = 1024, 4096, 23
    openclip_h = (49408 + 77) * hidden + layers * (4 * (hidden * hidden + hidden) + 2 * hidden * ffn + ffn + hidden
                                                   + 4 * hidden) + 2 * hidden
    assert P == {"sd15_unet": 859_520_964, "sd2_unet": 865_910_724, "sdxl_unet": 2_567_463_684,
                 "sdxl_refiner_unet": 2_259_526_660, "vae": 83_653_863, "clip_l": 123_060_480,
                 "openclip_h": openclip_h, "openclip_bigg": 694_659_840}
    assert openclip_h == 340_387_840


@pytest.mark.parametrize("arch", ARCHS, ids="-".join)
def test_folder_contents(written: dict, arch: tuple[str, str, str]) -> None:
    base, variant, prediction = arch
    folder = written[arch]
    index = json.loads((folder / "model_index.json").read_text())
    unet = json.loads((folder / "unet" / "config.json").read_text())
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    sdxl = base.startswith("sdxl")
    pipeline = PIPELINE[base] if variant == "normal" else PIPELINE[base].replace("Pipeline", "InpaintPipeline")
    assert index["_class_name"] == pipeline
    assert unet["in_channels"] == (9 if variant == "inpaint" else 4)
    assert unet["sample_size"] == {"sd-1": 64, "sd-2": 96 if arch == ("sd-2", "normal", "v_prediction") else 64,
                                   "sdxl": 128, "sdxl-refiner": 128}[base]
    common = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  steps_offset=1, prediction_type=prediction)
    if sdxl:
        assert scheduler == {**scheduler, **common, "_class_name": "EulerDiscreteScheduler",
                             "timestep_spacing": "leading"}
    else:
        assert scheduler == {**scheduler, **common, "_class_name": "PNDMScheduler", "skip_prk_steps": True,
                             "set_alpha_to_one": False}
    pads = {"sd-1": {"tokenizer": "<|endoftext|>"}, "sd-2": {"tokenizer": "!"},
            "sdxl": {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"}, "sdxl-refiner": {"tokenizer_2": "!"}}[base]
    assert sorted(p.name for p in folder.glob("tokenizer*")) == sorted(pads)
    for name, pad in pads.items():
        tokenizer = CLIPTokenizer.from_pretrained(folder / name, local_files_only=True)
        assert tokenizer.pad_token == pad and tokenizer.model_max_length == 77
        assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    # values that leave the parameter counts alone but change the outputs
    vae = json.loads((folder / "vae" / "config.json").read_text())
    assert (vae["scaling_factor"], vae.get("force_upcast", True)) == ((0.13025, True) if sdxl else (0.18215, True))
    assert (unet["attention_head_dim"], unet.get("use_linear_projection", False)) == {
        "sd-1": (8, False), "sd-2": ([5, 10, 20, 20], True), "sdxl": ([5, 10, 20], True),
        "sdxl-refiner": ([6, 12, 24, 24], True)}[base]
    texts = {name: json.loads((folder / name / "config.json").read_text()) for name in LDM_TEXT[base]}
    assert {name: (t["num_hidden_layers"], t["hidden_act"], t["projection_dim"]) for name, t in texts.items()} == {
        "sd-1": {"text_encoder": (12, "quick_gelu", 768)}, "sd-2": {"text_encoder": (23, "gelu", 512)},
        "sdxl": {"text_encoder": (12, "quick_gelu", 768), "text_encoder_2": (32, "gelu", 1280)},
        "sdxl-refiner": {"text_encoder_2": (32, "gelu", 1280)}}[base]


def test_unsupported_architectures_are_refused(tmp_path: Path) -> None:
    for base, variant in (("sd-2", "depth"), ("sdxl-refiner", "inpaint"), ("sd-3", "normal")):
        with pytest.raises(arch_configs.UnsupportedArchitectureError, match="no bundled diffusers config"):
            arch_configs.write_pipeline_config(BaseModelType(base), ModelVariantType(variant),
                                               SchedulerPredictionType.Epsilon, tmp_path / base)
    assert not arch_configs.is_bundled(BaseModelType.StableDiffusion1, ModelVariantType.Normal,
                                       SchedulerPredictionType.Sample)
    assert not list(tmp_path.iterdir())


# --- (c) diffusers converts a full-size checkpoint with the bundled folder, offline -----------------------------------


def _meta_checkpoint(folder: Path, base: str) -> dict[str, Any]:
    """An original-layout (LDM/SGM) state dict of the folder's architecture, with meta tensors.

    SD2's is shaped like the real files: 24 OpenCLIP blocks and a text projection, which diffusers drops.
    """
    models = _meta_components(folder)
    unet, vae = models["unet"], models["vae"]
    checkpoint = {f"model.diffusion_model.{k}": v for k, v in tiny.unet_to_ldm(unet.state_dict(), unet.config).items()}
    checkpoint |= {f"first_stage_model.{k}": v for k, v in tiny.vae_to_ldm(vae.state_dict(), 4).items()}
    for name, (layout, prefix) in LDM_TEXT[base].items():
        text = models[name]
        if base == "sd-2":
            config = CLIPTextConfig.from_pretrained(folder / name)
            config.num_hidden_layers, config.projection_dim = 24, 1024
            with init_empty_weights():
                text = CLIPTextModelWithProjection(config)
        convert = tiny.clip_to_ldm if layout == "clip" else tiny.open_clip_to_ldm
        checkpoint |= convert(text.state_dict(), prefix)
    return checkpoint


@pytest.mark.parametrize("arch", ARCHS, ids="-".join)
def test_from_single_file_converts_with_the_bundled_folder_offline(written: dict, arch: tuple[str, str, str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A dry run of diffusers' real conversion path on meta tensors: a full-size checkpoint (2-7 GB) costs nothing.

    diffusers cannot load meta tensors as is (it copies every tensor to the CPU), so three seams are patched: the file
    read returns the meta checkpoint, the final per-tensor copy installs the meta tensor after the same shape check,
    and the device dispatch is skipped. Everything else is diffusers' own: reading our folder with
    local_files_only=True, building each component from its config, mapping every checkpoint key, tokenizers and
    scheduler. Every parameter of every model must come from the checkpoint.
    """
    from diffusers.loaders import single_file, single_file_model
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from diffusers.models import model_loading_utils

    base = arch[0]
    folder = written[arch]
    expected, model_type = ARCHS[arch]
    checkpoint = _meta_checkpoint(folder, base)
    assert infer_diffusers_model_type(checkpoint) == model_type  # diffusers recognises the architecture we claim

    def install(module: Any, name: str, device: Any, value: Any = None, **_: Any) -> None:
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        assert getattr(owner, leaf).shape == value.shape, name
        param = torch.nn.Parameter(value.to("meta"), requires_grad=False)
        param.from_checkpoint = True
        owner._parameters[leaf] = param

    monkeypatch.setattr(single_file, "load_single_file_checkpoint", lambda *args, **kwargs: checkpoint)
    monkeypatch.setattr(model_loading_utils, "set_module_tensor_to_device", install)
    monkeypatch.setattr(single_file_model, "dispatch_model", lambda model, **kwargs: model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    pipe = getattr(diffusers, PIPELINE[base]).from_single_file("checkpoint.safetensors", config=str(folder),
                                                               local_files_only=True)
    for name, count in expected.items():
        model = getattr(pipe, name)
        missing = [n for n, p in model.named_parameters() if not getattr(p, "from_checkpoint", False)]
        assert not missing, f"{name}: {len(missing)} parameters not in the checkpoint, e.g. {missing[:3]}"
        assert _params(model) == count
    assert pipe.scheduler.config.prediction_type == arch[2]


# --- (b) the manager converts a checkpoint installed without --config ------------------------------------------------


@pytest.fixture
def tiny_writer(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The bundled writer, swapped for the tiny builder's config (the tiny checkpoint is not full-size)."""
    calls: list[tuple[Any, ...]] = []

    def write(base: BaseModelType, variant: ModelVariantType, prediction: SchedulerPredictionType, dest: Path) -> Path:
        calls.append((base, variant, prediction, dest))
        return tiny.build_sd_config(base.value, dest, variant=variant.value, prediction_type=prediction.value)

    monkeypatch.setattr(arch_configs, "write_pipeline_config", write)
    return calls


def test_manager_converts_a_checkpoint_installed_without_config(tmp_path: Path, tiny_writer: list) -> None:
    from invokeai_provider.core.context import RunContext
    from invokeai_provider.graph.engine import run_graph
    from invokeai_provider.core.fields import ModelIdentifierField
    from invokeai_provider.graph.graph import Graph
    from invokeai_provider.models.model_manager.binding import bind_model_fields
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.core.taxonomy import SubModelType
    from invokeai_provider.storage.base import LocalArtifactBackend, RunStore

    registry = ModelRegistry((tmp_path / "models").as_uri())
    single = tiny.build_sd_model("sd-1", tmp_path / "model.safetensors", layout="single_file")
    config = install_model(registry, str(single), name="civitai-model")
    assert config.config_path is None and config.format.value == "checkpoint"
    manager = ModelManager(registry, device="cpu")

    folder = manager.diffusers_folder(config)
    assert folder == registry.root / "converted" / config.key and (folder / "model_index.json").is_file()
    [(base, variant, prediction, staging)] = tiny_writer
    assert (base, variant, prediction) == (BaseModelType.StableDiffusion1, ModelVariantType.Normal,
                                           SchedulerPredictionType.Epsilon)
    shared = registry.root / "configs" / "sd-1-normal-epsilon"
    assert staging.parent == shared.parent and staging != shared and not staging.exists()  # written aside, renamed
    assert (shared / "model_index.json").is_file()
    assert [p.name for p in shared.parent.iterdir()] == [shared.name]  # no staging folder left behind

    # the converted UNet holds exactly the weights of the same tiny model built as a diffusers folder
    reference = diffusers.UNet2DConditionModel.from_pretrained(
        tiny.build_sd_model("sd-1", tmp_path / "reference"), subfolder="unet", local_files_only=True)
    with manager.load(ModelIdentifierField(**config.identifier()), SubModelType.UNet) as unet:
        expected, actual = reference.state_dict(), unet.state_dict()
        assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)

    run = RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="t", run_id="r"),
                     services={"models": manager})
    state = run_graph(Graph.from_dict(bind_model_fields(sd1_graph("civitai-model", prompt="a cat", seed=1, steps=2), registry)), run)
    [image] = state.outputs_of("decode")
    assert (image.width, image.height) == (64, 64) and run.store.read("images", image.image.image_name)

    # a second checkpoint of the same architecture reuses the written config
    other = install_model(registry, str(tiny.build_sd_model("sd-1", tmp_path / "other.safetensors",
                                                            layout="single_file", seed=1)))
    assert (manager.diffusers_folder(other) / "model_index.json").is_file() and len(tiny_writer) == 1


@pytest.mark.parametrize(("base", "variant", "prediction"), [("sd-2", "normal", "v_prediction"),
                                                          ("sd-1", "inpaint", "epsilon"),
                                                          ("sdxl-refiner", "normal", "epsilon")])
def test_manager_asks_for_the_probed_architecture(tmp_path: Path, tiny_writer: list, base: str, variant: str,
                                                  prediction: str) -> None:
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    registry = ModelRegistry((tmp_path / "models").as_uri())
    single = tiny.build_sd_model(base, tmp_path / "m.safetensors", layout="single_file", variant=variant,
                                 prediction_type=prediction)
    folder = ModelManager(registry, device="cpu").diffusers_folder(install_model(registry, str(single)))
    [(*asked, _)] = tiny_writer
    assert asked == [BaseModelType(base), ModelVariantType(variant), SchedulerPredictionType(prediction)]
    assert (registry.root / "configs" / f"{base}-{variant}-{prediction}" / "model_index.json").is_file()
    unet = json.loads((folder / "unet" / "config.json").read_text())
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert (unet["in_channels"], scheduler["prediction_type"]) == (9 if variant == "inpaint" else 4, prediction)


def test_manager_config_override_and_clear_errors(tmp_path: Path, tiny_writer: list) -> None:
    from invokeai_provider.models.model_manager.configs import ModelConfig
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelLoadError, ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    registry = ModelRegistry((tmp_path / "models").as_uri())
    manager = ModelManager(registry, device="cpu")
    own = tiny.build_sd_config("sd-2", tmp_path / "own-config", prediction_type="v_prediction")
    single = tiny.build_sd_model("sd-2", tmp_path / "v.safetensors", layout="single_file",
                                 prediction_type="v_prediction")
    config = install_model(registry, str(single), config_path=str(own))
    assert (manager.diffusers_folder(config) / "model_index.json").is_file()
    assert tiny_writer == [] and not (registry.root / "configs").exists()  # --config wins

    def record(key: str, base: str, variant: str) -> ModelConfig:
        return registry.add(ModelConfig(key=key, hash=f"blake3:{key}", path=f"files/{key}/m.safetensors", file_size=1,
                                        name=key, source="x", type="main", format="checkpoint", base=base,
                                        variant=variant, prediction_type="epsilon"))

    with pytest.raises(ModelLoadError, match=r"no bundled diffusers config.*--config"):
        manager.diffusers_folder(record("depth", "sd-2", "depth"))
    with pytest.raises(ModelLoadError, match=r"single-file sd-3 checkpoints are not supported"):
        manager.diffusers_folder(record("sd3", "sd-3", "normal"))
    assert tiny_writer == []
