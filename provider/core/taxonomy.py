"""InvokeAI's model taxonomy (same string values), used by model identifier fields on edges."""

from __future__ import annotations

from enum import Enum


class BaseModelType(str, Enum):
    Any = "any"
    StableDiffusion1 = "sd-1"
    StableDiffusion2 = "sd-2"
    StableDiffusion3 = "sd-3"
    StableDiffusionXL = "sdxl"
    StableDiffusionXLRefiner = "sdxl-refiner"
    Flux = "flux"
    Flux2 = "flux2"
    CogView4 = "cogview4"
    ZImage = "z-image"
    ErnieImage = "ernie-image"
    Ideogram4 = "ideogram-4"
    External = "external"
    QwenImage = "qwen-image"
    Anima = "anima"
    Krea2 = "krea-2"
    Wan = "wan"
    Unknown = "unknown"


class ModelType(str, Enum):
    ONNX = "onnx"
    Main = "main"
    VAE = "vae"
    LoRA = "lora"
    ControlLoRa = "control_lora"
    ControlNet = "controlnet"
    TextualInversion = "embedding"
    IPAdapter = "ip_adapter"
    CLIPVision = "clip_vision"
    CLIPEmbed = "clip_embed"
    T2IAdapter = "t2i_adapter"
    T5Encoder = "t5_encoder"
    Qwen3Encoder = "qwen3_encoder"
    QwenVLEncoder = "qwen_vl_encoder"
    Qwen3VLEncoder = "qwen3_vl_encoder"
    MistralEncoder = "mistral_encoder"
    WanT5Encoder = "wan_t5_encoder"
    Gemma2Encoder = "gemma2_encoder"
    SpandrelImageToImage = "spandrel_image_to_image"
    SigLIP = "siglip"
    FluxRedux = "flux_redux"
    LlavaOnevision = "llava_onevision"
    PromptEnhancer = "prompt_enhancer"
    TextLLM = "text_llm"
    ExternalImageGenerator = "external_image_generator"
    PiDDecoder = "pid_decoder"
    Unknown = "unknown"


class SubModelType(str, Enum):
    UNet = "unet"
    Transformer = "transformer"
    Transformer2 = "transformer_2"
    TextEncoder = "text_encoder"
    TextEncoder2 = "text_encoder_2"
    TextEncoder3 = "text_encoder_3"
    Tokenizer = "tokenizer"
    Tokenizer2 = "tokenizer_2"
    Tokenizer3 = "tokenizer_3"
    PE = "pe"
    PETokenizer = "pe_tokenizer"
    VAE = "vae"
    VAEDecoder = "vae_decoder"
    VAEEncoder = "vae_encoder"
    Scheduler = "scheduler"
    SafetyChecker = "safety_checker"


class ModelVariantType(str, Enum):
    Normal = "normal"
    Inpaint = "inpaint"
    Depth = "depth"


class FluxVariantType(str, Enum):
    """FLUX.1 variants: schnell has no guidance embedder, dev has one, dev_fill takes 384 input channels."""

    Schnell = "schnell"
    Dev = "dev"
    DevFill = "dev_fill"


class Flux2VariantType(str, Enum):
    """FLUX.2 variants, as InvokeAI names them: Klein 4B / 9B (Qwen3 4B / 8B text encoders; step-distilled) and
    their undistilled Base models, and [dev] (Mistral Small 3.1 encoder)."""

    Klein4B = "klein_4b"
    Klein4BBase = "klein_4b_base"
    Klein9B = "klein_9b"
    Klein9BBase = "klein_9b_base"
    Dev = "dev"


class ZImageVariantType(str, Enum):
    """Z-Image variants: Turbo (distilled, few steps, no CFG; scheduler shift 3) and Base (undistilled; shift 6)."""

    Turbo = "turbo"
    ZBase = "zbase"


class Qwen3VariantType(str, Enum):
    """A Qwen3 text encoder's size, read from its hidden width: 4B (2560: Z-Image, FLUX.2 Klein 4B), 8B (4096: FLUX.2
    Klein 9B) or 0.6B (1024)."""

    Qwen3_4B = "qwen3_4b"
    Qwen3_8B = "qwen3_8b"
    Qwen3_06B = "qwen3_06b"


class MistralVariantType(str, Enum):
    """A FLUX.2 [dev] Mistral text encoder (5,120 wide), by depth: BFL's 30-layer "cow" distillation, read without
    its final norm, or the 40-layer Mistral Small 3 (24B) that FLUX.2-dev's diffusers folder carries."""

    Cow = "cow_mistral3_small"
    Mistral24B = "mistral3_24b"


class ClipVariantType(str, Enum):
    """A CLIP text encoder's size, read from its hidden width: CLIP-L (768, FLUX's) or CLIP-G (1280)."""

    L = "large"
    G = "gigantic"


class SchedulerPredictionType(str, Enum):
    Epsilon = "epsilon"
    VPrediction = "v_prediction"
    Sample = "sample"
