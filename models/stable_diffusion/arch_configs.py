"""Diffusers configs of the public Stable Diffusion architectures, shipped so single-file checkpoints load offline.

``<Pipeline>.from_single_file(file, config=DIR)`` needs a diffusers folder of the checkpoint's architecture: without
one diffusers fetches the configs from the model hub, which is not reachable here. A checkpoint's weights say which
architecture it is (the prober reads base, variant and prediction type), and there are only a handful of them, so
their configs are written out below and ``write_pipeline_config`` turns them into a weight-less diffusers folder.

Sources: runwayml/stable-diffusion-v1-5 (+ -inpainting), stabilityai/stable-diffusion-2 (768, v_prediction),
-2-base (512, epsilon), -2-inpainting, stabilityai/stable-diffusion-xl-base-1.0, diffusers/stable-diffusion-xl-1.0-
inpainting-0.1 and stabilityai/stable-diffusion-xl-refiner-1.0. Every value is written out rather than left to library
defaults; ``PUBLIC_PARAMS`` holds the public parameter counts that tests/models/stable_diffusion/test_arch_configs.py checks them by.

No torch at import time: the configs are plain data, the writer imports transformers only for the tokenizer and the
text-encoder config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from invokeai_provider.core.taxonomy import BaseModelType, ModelVariantType, SchedulerPredictionType
from invokeai_provider.errors import InvokeAIProviderError

__all__ = [
    "CLIP_L", "EULER_SCHEDULER", "OPENCLIP_BIGG", "OPENCLIP_H", "PNDM_SCHEDULER", "PREDICTION_TYPES", "PUBLIC_PARAMS",
    "SCHEDULER_BETAS", "SD15_UNET", "SD15_VAE", "SD2_UNET", "SD2_VAE", "SDXL_REFINER_UNET", "SDXL_UNET", "SDXL_VAE",
    "SUPPORTED", "UnsupportedArchitectureError", "is_bundled", "pipeline_configs", "write_pipeline_config",
]

_CA_DOWN, _DOWN, _CA_UP, _UP = "CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"

# --- UNets ------------------------------------------------------------------------------------------------------------

_UNET_COMMON = dict(
    in_channels=4, out_channels=4, layers_per_block=2, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
    flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, mid_block_scale_factor=1, center_input_sample=False,
)

SD15_UNET: dict[str, Any] = dict(
    **_UNET_COMMON,
    sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=(_CA_DOWN, _CA_DOWN, _CA_DOWN, _DOWN),
    up_block_types=(_UP, _CA_UP, _CA_UP, _CA_UP),
    cross_attention_dim=768,
    attention_head_dim=8,
)

# The 768-v model; the 512 models (-2-base, -2-inpainting) differ only in sample_size (64).
SD2_UNET: dict[str, Any] = {
    **SD15_UNET,
    "sample_size": 96,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
}

SDXL_UNET: dict[str, Any] = dict(
    **_UNET_COMMON,
    sample_size=128,
    block_out_channels=(320, 640, 1280),
    down_block_types=(_DOWN, _CA_DOWN, _CA_DOWN),
    up_block_types=(_CA_UP, _CA_UP, _UP),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # 1280 (pooled bigG) + 6 * 256 (size, crop, target size ids)
)

SDXL_REFINER_UNET: dict[str, Any] = dict(
    **_UNET_COMMON,
    sample_size=128,
    block_out_channels=(384, 768, 1536, 1536),
    down_block_types=(_DOWN, _CA_DOWN, _CA_DOWN, _DOWN),
    up_block_types=(_UP, _CA_UP, _CA_UP, _UP),
    transformer_layers_per_block=4,
    attention_head_dim=(6, 12, 24, 24),
    cross_attention_dim=1280,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2560,  # 1280 (pooled bigG) + 5 * 256 (size, crop, aesthetic score ids)
)

# --- VAEs -------------------------------------------------------------------------------------------------------------

SD15_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, act_fn="silu", norm_num_groups=32,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), sample_size=512, scaling_factor=0.18215,
)
SD2_VAE: dict[str, Any] = {**SD15_VAE, "sample_size": 768}
# force_upcast=True as published: the original SDXL VAE overflows in fp16, so diffusers decodes it in fp32.
SDXL_VAE: dict[str, Any] = {**SD15_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

# --- text encoders (transformers CLIPTextConfig kwargs) ---------------------------------------------------------------

_CLIP_COMMON = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, bos_token_id=49406,
                    eos_token_id=49407, pad_token_id=1)

CLIP_L: dict[str, Any] = dict(**_CLIP_COMMON, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, hidden_act="quick_gelu", projection_dim=768)

# OpenCLIP ViT-H/14 as SD2 uses it: the checkpoints hold 24 blocks, SD2 conditions on the penultimate one, so the
# diffusers text encoder has 23 (diffusers' converter drops block 23: SD_2_TEXT_ENCODER_KEYS_TO_IGNORE).
OPENCLIP_H: dict[str, Any] = dict(**_CLIP_COMMON, hidden_size=1024, num_hidden_layers=23, num_attention_heads=16,
                                  intermediate_size=4096, hidden_act="gelu", projection_dim=512)

OPENCLIP_BIGG: dict[str, Any] = dict(**_CLIP_COMMON, hidden_size=1280, num_hidden_layers=32, num_attention_heads=20,
                                     intermediate_size=5120, hidden_act="gelu", projection_dim=1280)

# --- schedulers -------------------------------------------------------------------------------------------------------

SCHEDULER_BETAS: dict[str, Any] = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1, prediction_type="epsilon")
PNDM_SCHEDULER: dict[str, Any] = dict(**SCHEDULER_BETAS, skip_prk_steps=True, set_alpha_to_one=False)
EULER_SCHEDULER: dict[str, Any] = dict(**SCHEDULER_BETAS, timestep_spacing="leading", interpolation_type="linear",
                                       use_karras_sigmas=False)

# Public parameter counts (a wrong config value shows up as a different count).
PUBLIC_PARAMS: dict[str, int] = {
    "sd15_unet": 859_520_964,
    "sd2_unet": 865_910_724,
    "sdxl_unet": 2_567_463_684,
    "sdxl_refiner_unet": 2_259_526_660,  # its fp16 file: 4.52 GB
    "vae": 83_653_863,  # SD1, SD2 and SDXL VAEs share the architecture
    "clip_l": 123_060_480,
    "openclip_h": 340_387_840,
    "openclip_bigg": 694_659_840,  # with its 1280x1280 text projection
}

# --- pipelines --------------------------------------------------------------------------------------------------------

_N, _I = ModelVariantType.Normal, ModelVariantType.Inpaint
SUPPORTED: dict[BaseModelType, tuple[ModelVariantType, ...]] = {
    BaseModelType.StableDiffusion1: (_N, _I),
    BaseModelType.StableDiffusion2: (_N, _I),
    BaseModelType.StableDiffusionXL: (_N, _I),
    BaseModelType.StableDiffusionXLRefiner: (_N,),
}
PREDICTION_TYPES = (SchedulerPredictionType.Epsilon, SchedulerPredictionType.VPrediction)
_EOS = "<|endoftext|>"
_NULL = [None, None]
_PIPELINES = {
    (BaseModelType.StableDiffusion1, _N): "StableDiffusionPipeline",
    (BaseModelType.StableDiffusion1, _I): "StableDiffusionInpaintPipeline",
    (BaseModelType.StableDiffusion2, _N): "StableDiffusionPipeline",
    (BaseModelType.StableDiffusion2, _I): "StableDiffusionInpaintPipeline",
    (BaseModelType.StableDiffusionXL, _N): "StableDiffusionXLPipeline",
    (BaseModelType.StableDiffusionXL, _I): "StableDiffusionXLInpaintPipeline",
    (BaseModelType.StableDiffusionXLRefiner, _N): "StableDiffusionXLImg2ImgPipeline",
}


class UnsupportedArchitectureError(InvokeAIProviderError, ValueError):
    """No config is bundled for this base/variant/prediction type."""


def is_bundled(base: BaseModelType, variant: ModelVariantType, prediction_type: SchedulerPredictionType) -> bool:
    """Whether a config ships for this architecture (SD2 depth, refiner inpaint and sample prediction do not)."""
    return variant in SUPPORTED.get(base, ()) and prediction_type in PREDICTION_TYPES


def _check(base: BaseModelType, variant: ModelVariantType, prediction_type: SchedulerPredictionType) -> None:
    if not is_bundled(base, variant, prediction_type):
        bundled = "; ".join(f"{b.value} ({', '.join(v.value for v in vs)})" for b, vs in SUPPORTED.items())
        raise UnsupportedArchitectureError(
            f"no bundled diffusers config for base {base.value!r}, variant {variant.value!r}, prediction type "
            f"{prediction_type.value!r}; bundled: {bundled}, each with epsilon or v_prediction")


def pipeline_configs(base: BaseModelType, variant: ModelVariantType = _N,
                     prediction_type: SchedulerPredictionType = SchedulerPredictionType.Epsilon) -> dict[str, Any]:
    """The folder's contents as data: ``{"model_index": ..., "unet": ..., "vae": ..., "scheduler": ...,
    "text_encoder[_2]": (CLIPTextConfig kwargs, with projection, tokenizer pad token)}``."""
    base, variant = BaseModelType(base), ModelVariantType(variant)
    prediction_type = SchedulerPredictionType(prediction_type)
    _check(base, variant, prediction_type)
    sdxl = base in (BaseModelType.StableDiffusionXL, BaseModelType.StableDiffusionXLRefiner)
    if base is BaseModelType.StableDiffusion1:
        unet, vae = dict(SD15_UNET), dict(SD15_VAE)
        encoders = {"text_encoder": (CLIP_L, False, _EOS)}
    elif base is BaseModelType.StableDiffusion2:
        v768 = variant is _N and prediction_type is SchedulerPredictionType.VPrediction  # 768-v, else the 512 models
        unet, vae = {**SD2_UNET, "sample_size": 96 if v768 else 64}, {**SD2_VAE, "sample_size": 768 if v768 else 512}
        encoders = {"text_encoder": (OPENCLIP_H, False, "!")}
    elif base is BaseModelType.StableDiffusionXL:
        unet, vae = dict(SDXL_UNET), dict(SDXL_VAE)
        encoders = {"text_encoder": (CLIP_L, False, _EOS), "text_encoder_2": (OPENCLIP_BIGG, True, "!")}
    else:
        unet, vae = dict(SDXL_REFINER_UNET), dict(SDXL_VAE)
        encoders = {"text_encoder_2": (OPENCLIP_BIGG, True, "!")}
    if variant is _I:
        unet["in_channels"] = 9  # latents + mask + masked-image latents
    scheduler = {"_class_name": "EulerDiscreteScheduler", **EULER_SCHEDULER} if sdxl else \
        {"_class_name": "PNDMScheduler", **PNDM_SCHEDULER}
    scheduler["prediction_type"] = prediction_type.value

    index: dict[str, Any] = {"_class_name": _PIPELINES[base, variant], "feature_extractor": _NULL,
                             "image_encoder": _NULL, "scheduler": ["diffusers", scheduler["_class_name"]],
                             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    for name in ("text_encoder", "text_encoder_2") if sdxl else ("text_encoder",):
        if name in encoders:
            model = "CLIPTextModelWithProjection" if encoders[name][1] else "CLIPTextModel"
            index[name] = ["transformers", model]
            index[name.replace("text_encoder", "tokenizer")] = ["transformers", "CLIPTokenizer"]
        else:
            index[name] = index[name.replace("text_encoder", "tokenizer")] = _NULL
    if sdxl:
        refiner = base is BaseModelType.StableDiffusionXLRefiner
        index["force_zeros_for_empty_prompt"] = not refiner
        if refiner or variant is _I:
            index["requires_aesthetics_score"] = refiner
    else:
        index.update(safety_checker=_NULL, requires_safety_checker=False)
    return {"model_index": index, "unet": {"_class_name": "UNet2DConditionModel", **unet},
            "vae": {"_class_name": "AutoencoderKL", **vae}, "scheduler": scheduler, **encoders}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from importlib.metadata import version

    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**data, "_diffusers_version": version("diffusers")}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_pipeline_config(base: BaseModelType, variant: ModelVariantType, prediction_type: SchedulerPredictionType,
                          dest: Path) -> Path:
    """Write the weight-less diffusers folder of this architecture at ``dest`` (a new folder) and return it.

    model_index.json, unet/ and vae/ config.json, scheduler/scheduler_config.json, text_encoder[_2]/config.json and
    tokenizer[_2]/ with the real CLIP BPE vocabulary: what ``from_single_file(config=dest, local_files_only=True)``
    reads. Not atomic: callers that share the folder write elsewhere and rename.
    """
    from transformers import CLIPTextConfig

    from invokeai_provider.models.stable_diffusion.clip_vocab import clip_tokenizer, clip_tokenizer_files

    configs = pipeline_configs(base, variant, prediction_type)
    dest = Path(dest)
    dest.mkdir(parents=True)  # refuses an existing folder: never mix two architectures
    _write_json(dest / "model_index.json", configs["model_index"])
    _write_json(dest / "unet" / "config.json", configs["unet"])
    _write_json(dest / "vae" / "config.json", configs["vae"])
    _write_json(dest / "scheduler" / "scheduler_config.json", configs["scheduler"])
    vocab = clip_tokenizer_files()
    for name in ("text_encoder", "text_encoder_2"):
        if name not in configs:
            continue
        kwargs, with_projection, pad_token = configs[name]
        architecture = "CLIPTextModelWithProjection" if with_projection else "CLIPTextModel"
        CLIPTextConfig(**kwargs, architectures=[architecture]).save_pretrained(dest / name)
        tokenizer_dir = dest / name.replace("text_encoder", "tokenizer")
        clip_tokenizer(pad_token).save_pretrained(tokenizer_dir)
        for file in ("vocab.json", "merges.txt"):  # beside tokenizer.json, as hub repos ship them
            shutil.copyfile(vocab / file, tokenizer_dir / file)
    return dest
