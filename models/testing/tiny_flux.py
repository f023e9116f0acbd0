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

import string
from pathlib import Path
from typing import Any, Literal

from invokeai_provider.models.testing.tiny import _construct, clip_tokenizer

FluxVariant = Literal["dev", "schnell"]

VARIANTS: tuple[FluxVariant, ...] = ("dev", "schnell")
T5_WIDTH = 4096  # T5-XXL's d_model: the transformer's joint_attention_dim, which probing reads
CLIP_WIDTH = 768  # CLIP-L's: the transformer's pooled_projection_dim
MAX_SEQ_LEN = {"dev": 512, "schnell": 256}  # InvokeAI's T5 sequence length per variant
VAE_SCALING, VAE_SHIFT = 0.3611, 0.1159
# FLUX's flow-matching schedules: dev shifts with the image size, schnell does not
SCHEDULERS: dict[str, dict[str, Any]] = {
    "dev": dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                base_image_seq_len=256, max_image_seq_len=4096),
    "schnell": dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False),
}


def _transformer(variant: FluxVariant, seed: int) -> Any:
    from diffusers import FluxTransformer2DModel

    return _construct(lambda: FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=T5_WIDTH, pooled_projection_dim=CLIP_WIDTH,
        guidance_embeds=variant == "dev", axes_dims_rope=(4, 6, 6)), materialize=True, seed=seed,
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
                      is_gated_act=True, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                      tie_word_embeddings=False)
    return _construct(lambda: T5EncoderModel(config), materialize=True, seed=seed, tag="flux/t5")


def flux_components(variant: FluxVariant = "dev", seed: int = 0) -> dict[str, Any]:
    """The pipeline components of a tiny FLUX.1 model (what ``FluxPipeline(**components)`` takes)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if variant not in VARIANTS:
        raise ValueError(f"FLUX variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    t5_tok = t5_tokenizer(MAX_SEQ_LEN[variant])
    return {"transformer": _transformer(variant, seed), "vae": _vae(seed), "text_encoder": _clip(seed),
            "tokenizer": clip_tokenizer(), "text_encoder_2": _t5(seed, len(t5_tok)), "tokenizer_2": t5_tok,
            "scheduler": FlowMatchEulerDiscreteScheduler(**SCHEDULERS[variant])}


def build_flux_model(dest: Path, *, variant: FluxVariant = "dev", seed: int = 0) -> Path:
    """A tiny FLUX.1 model as a diffusers folder (``model_index.json`` of a ``FluxPipeline``)."""
    from diffusers import FluxPipeline

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    FluxPipeline(**flux_components(variant, seed)).save_pretrained(dest, safe_serialization=True)
    return dest


__all__ = ["MAX_SEQ_LEN", "VARIANTS", "build_flux_model", "flux_components", "t5_tokenizer"]
