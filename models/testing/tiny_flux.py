"""Tiny random-weight FLUX.1 models (diffusers layout) for tests and offline smoke runs.

As for the SD family (`invokeai_provider.models.testing.tiny`), the sizes a prober reads are the real ones and the
rest is narrow: the transformer takes 64 latent channels (16 VAE channels in 2x2 patches), its context embedder takes
T5-XXL's 4,096-wide states and its pooled projection CLIP-L's 768; dev has a guidance embedder, schnell none. The
VAE has FLUX's 16 latent channels, scaling and shift factors and no quant convs. CLIP-L is the real tokenizer with
a 2-layer encoder of the real width; T5 has the real width (4,096) but one layer and a small vocabulary, since
T5's SentencePiece model is not reachable offline: its tokenizer is a small Unigram one built here, in T5's format
(``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, an ``</s>`` after every text).
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Literal

from invokeai_provider.models.testing.tiny import _construct, clip_tokenizer

FluxVariant = Literal["dev", "schnell", "fill"]

VARIANTS: tuple[FluxVariant, ...] = ("dev", "schnell", "fill")
T5_WIDTH = 4096  # T5-XXL's d_model: the transformer's joint_attention_dim, which probing reads
CLIP_WIDTH = 768  # CLIP-L's: the transformer's pooled_projection_dim
MAX_SEQ_LEN = {"dev": 512, "schnell": 256, "fill": 512}  # InvokeAI's T5 sequence length per variant
VAE_SCALING, VAE_SHIFT = 0.3611, 0.1159
# FLUX's flow-matching schedules: dev shifts with the image size, schnell does not
SCHEDULERS: dict[str, dict[str, Any]] = {
    "dev": dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                base_image_seq_len=256, max_image_seq_len=4096),
    "schnell": dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False),
}
SCHEDULERS["fill"] = SCHEDULERS["dev"]
# FLUX Fill's transformer takes 320 more channels per token: the masked image's latents and the folded mask
IN_CHANNELS = {"dev": 64, "schnell": 64, "fill": 384}
PIPELINES = {"dev": "FluxPipeline", "schnell": "FluxPipeline", "fill": "FluxFillPipeline"}


def _transformer(variant: FluxVariant, seed: int) -> Any:
    from diffusers import FluxTransformer2DModel

    return _construct(lambda: FluxTransformer2DModel(
        patch_size=1, in_channels=IN_CHANNELS[variant], out_channels=64, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=T5_WIDTH, pooled_projection_dim=CLIP_WIDTH,
        guidance_embeds=variant != "schnell", axes_dims_rope=(4, 6, 6)), materialize=True, seed=seed,
        tag=f"flux-{variant}/transformer")


def _vae(seed: int) -> Any:
    from diffusers import AutoencoderKL

    return _construct(lambda: AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=16, sample_size=64,
        scaling_factor=VAE_SCALING, shift_factor=VAE_SHIFT, use_quant_conv=False, use_post_quant_conv=False),
        materialize=True, seed=seed, tag="flux/vae")


def _clip(seed: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(hidden_size=CLIP_WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=12,
                            hidden_act="quick_gelu", projection_dim=CLIP_WIDTH, vocab_size=49408,
                            max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return _construct(lambda: CLIPTextModel(config), materialize=True, seed=seed, tag="flux/clip-l")


def t5_tokenizer(model_max_length: int = 512) -> Any:
    """A small T5-format Unigram tokenizer: lower and upper letters, digits and punctuation, each alone and after a
    word boundary (``▁``), plus a few hundred common words, so prompts tokenize into words as T5's would."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    words = ("a an the of in on at to and with by for from is are photo painting portrait landscape cat dog fox "
             "lighthouse storm sea sky city night day red blue green white black golden oil watercolor study "
             "mountain forest river tree flower house street light dark").split()
    symbols = list(string.ascii_letters + string.digits + string.punctuation)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [(f"▁{word}", -1.0) for word in words]
    pieces += [(f"▁{symbol}", -2.5) for symbol in symbols] + [(symbol, -2.0) for symbol in symbols]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=model_max_length)


def _t5(seed: int, vocab_size: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=vocab_size, d_model=T5_WIDTH, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, dense_act_fn="gelu_new",
                      is_gated_act=True, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = _construct(lambda: T5EncoderModel(config), materialize=True, seed=seed, tag="flux/t5")
    model.tie_weights()  # one embedding table, as T5's: the random fill gave the tied pair two
    return model


def flux_components(variant: FluxVariant = "dev", seed: int = 0) -> dict[str, Any]:
    """The pipeline components of a tiny FLUX.1 model (what ``FluxPipeline(**components)`` takes, or
    ``FluxFillPipeline`` for fill)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if variant not in VARIANTS:
        raise ValueError(f"FLUX variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    t5_tok = t5_tokenizer(MAX_SEQ_LEN[variant])
    return {"transformer": _transformer(variant, seed), "vae": _vae(seed), "text_encoder": _clip(seed),
            "tokenizer": clip_tokenizer(), "text_encoder_2": _t5(seed, len(t5_tok)), "tokenizer_2": t5_tok,
            "scheduler": FlowMatchEulerDiscreteScheduler(**SCHEDULERS[variant])}


def build_flux_model(dest: Path, *, variant: FluxVariant = "dev", seed: int = 0) -> Path:
    """A tiny FLUX.1 model as a diffusers folder (``model_index.json`` of a ``FluxPipeline``, or a
    ``FluxFillPipeline`` for fill)."""
    import diffusers

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    pipeline = getattr(diffusers, PIPELINES[variant])
    pipeline(**flux_components(variant, seed)).save_pretrained(dest, safe_serialization=True)
    return dest


FluxLoraStyle = Literal["kohya", "diffusers", "aitoolkit", "xlabs", "onetrainer"]
LORA_STYLES: tuple[FluxLoraStyle, ...] = ("kohya", "diffusers", "aitoolkit", "xlabs", "onetrainer")
_WIDTH, _MLP = 32, 128  # the tiny transformer's inner width (2 heads of 16) and its MLP's (4x)


def _bfl_lora_layers() -> dict[str, tuple[int, int]]:
    """The tiny transformer's LoRA-patchable layers by Black Forest Labs' names: (fan_out, fan_in)."""
    w, m = _WIDTH, _MLP
    layers = {"img_in": (w, 64), "txt_in": (w, T5_WIDTH), "final_layer.linear": (64, w),
              "final_layer.adaLN_modulation.1": (2 * w, w), "single_blocks.0.linear1": (3 * w + m, w),
              "single_blocks.0.linear2": (w, w + m), "single_blocks.0.modulation.lin": (3 * w, w)}
    for stream in ("img", "txt"):
        layers |= {f"double_blocks.0.{stream}_attn.qkv": (3 * w, w), f"double_blocks.0.{stream}_attn.proj": (w, w),
                   f"double_blocks.0.{stream}_mlp.0": (m, w), f"double_blocks.0.{stream}_mlp.2": (w, m),
                   f"double_blocks.0.{stream}_mod.lin": (6 * w, w)}
    return layers


def build_flux_lora(dest: Path, *, style: FluxLoraStyle = "kohya", rank: int = 4, seed: int = 0) -> Path:
    """A tiny random FLUX.1 LoRA ``.safetensors`` file for the tiny transformer (and, in kohya style, CLIP-L's
    first layer), in one of the formats InvokeAI reads:

    * ``kohya``: ``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`` (BFL names, fused qkv) with ``.alpha``,
      plus ``lora_te1_text_model_encoder_layers_0_self_attn_q_proj`` for CLIP-L;
    * ``aitoolkit``: ``diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight``;
    * ``xlabs``: ``double_blocks.0.processor.qkv_lora1.down.weight`` (double-block attention only);
    * ``diffusers``: ``transformer.transformer_blocks.0.attn.to_q.lora_A.weight`` (diffusers' names);
    * ``onetrainer``: ``lora_transformer_transformer_blocks_0_attn_to_q.lora_down.weight`` with ``.alpha``.
    """
    import torch
    from safetensors.torch import save_file

    from invokeai_provider.models.flux.lora_conversion import to_diffusers_names

    if style not in LORA_STYLES:
        raise ValueError(f"FLUX LoRA style {style!r}: expected one of {', '.join(LORA_STYLES)}")
    dest = Path(dest)
    if dest.suffix != ".safetensors" or dest.exists():
        raise ValueError(f"{dest}: expected a new .safetensors file")
    generator = torch.Generator().manual_seed(seed)

    def factors(fan_out: int, fan_in: int) -> tuple[torch.Tensor, torch.Tensor]:
        down = torch.empty(rank, fan_in).uniform_(-(fan_in ** -0.5), fan_in ** -0.5, generator=generator)
        return torch.empty(fan_out, rank).uniform_(-0.5, 0.5, generator=generator), down

    alpha = torch.tensor(float(rank) / 2)
    tensors: dict[str, torch.Tensor] = {}
    for name, (fan_out, fan_in) in _bfl_lora_layers().items():
        up, down = factors(fan_out, fan_in)
        if style == "xlabs":
            m = re.fullmatch(r"double_blocks\.(\d+)\.(img|txt)_attn\.(qkv|proj)", name)
            if m:
                key = f"double_blocks.{m[1]}.processor.{m[3]}_lora{1 if m[2] == 'img' else 2}"
                tensors |= {f"{key}.down.weight": down, f"{key}.up.weight": up}
        elif style == "kohya":
            key = "lora_unet_" + name.replace(".", "_")
            tensors |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": alpha}
        else:
            key = f"diffusion_model.{name}"
            tensors |= {f"{key}.lora_A.weight": down, f"{key}.lora_B.weight": up}
    if style == "kohya":
        for projection in ("q_proj", "v_proj"):
            up, down = factors(CLIP_WIDTH, CLIP_WIDTH)
            key = f"lora_te1_text_model_encoder_layers_0_self_attn_{projection}"
            tensors |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": alpha}
    elif style in ("diffusers", "onetrainer"):  # the same layers, under diffusers' names
        converted = to_diffusers_names(tensors)
        if style == "diffusers":
            tensors = converted
        else:
            tensors = {}
            for key, tensor in converted.items():  # "transformer.<path>.lora_A.weight"
                path, role, _ = key.removeprefix("transformer.").rsplit(".", 2)
                stem = "lora_transformer_" + path.replace(".", "_")
                tensors |= {f"{stem}.{'lora_down' if role == 'lora_A' else 'lora_up'}.weight": tensor,
                            f"{stem}.alpha": alpha}
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, str(dest), metadata={"format": "pt"})
    return dest


__all__ = ["LORA_STYLES", "MAX_SEQ_LEN", "VARIANTS", "build_flux_lora", "build_flux_model", "flux_components",
           "t5_tokenizer"]
