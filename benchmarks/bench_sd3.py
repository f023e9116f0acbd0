"""SD3.5 text-to-image throughput: our engine's InvokeAI SD3 graph against diffusers' StableDiffusion3Pipeline.

    .venv/bin/python benchmarks/bench_sd3.py                     # --mode gpu when CUDA is available
    .venv/bin/python benchmarks/bench_sd3.py --mode cpu-tiny --repeats 2

Modes:
- ``gpu``: the full-size SD3.5 Large architecture (an 8 B-parameter MMDiT transformer, CLIP-L, OpenCLIP bigG,
  T5-XXL, the 16-channel VAE) with RANDOM bfloat16 weights, built on the GPU and saved once as a diffusers folder,
  at 1024x1024, 28 steps and CFG 3.5 (InvokeAI's default). Random weights time like real ones (same shapes, same
  kernels); the images are noise. T5's tokenizer is the small offline one of
  ``invokeai_provider.models.testing.tiny_flux`` (its ids fit T5-XXL's vocabulary; the sequence is padded to 256).
- ``cpu-tiny``: the tiny SD3.5 model at 64x64 and 4 steps: shows that the script works and measures per-image
  overhead on CPU. These figures are not the GPU target.

Both paths load the same folder in the same dtype on the same device, with the same prompt, negative prompt (""),
size, steps and CFG (both batch the negative and positive predictions; their schedules differ only in values,
InvokeAI's being unshifted, so the work per step is the same):
- engine: the InvokeAI graph sd3_model_loader -> two sd3_text_encoder -> sd3_denoise -> sd3_l2i with one
  ``ModelManager``; batch N is N sessions (a Batch over the seed) in one engine call, as a chunk of a mapped task
  runs them (the prompts encoded once from the node cache; each denoise runs alone), each saving a PNG;
- diffusers: ``StableDiffusion3Pipeline`` from the folder, one call with ``num_images_per_prompt=N``,
  ``output_type="pil"``.

Timings exclude the first load, synchronise CUDA around each sample and report medians; each path runs in its own
phase (the other's models freed) and reports its own peak GPU memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pipeline_bench  # the harness beside this file: model folder, the two paths, timing and table
from bench_flux import T5_XXL
from pipeline_bench import PROMPT, edge, graph_doc

CFG = 3.5
MODE_DEFAULTS = {"gpu": (1024, 28, 5), "cpu-tiny": (64, 4, 3)}  # size, steps, repeats
# SD3.5 Large's public architecture (stabilityai/stable-diffusion-3.5-large)
TRANSFORMER = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38,
                   attention_head_dim=64, num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
                   pooled_projection_dim=2048, pos_embed_max_size=192, qk_norm="rms_norm")
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768,
              hidden_act="quick_gelu", max_position_embeddings=77, vocab_size=49408, bos_token_id=49406,
              eos_token_id=49407, pad_token_id=1)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              projection_dim=1280, hidden_act="gelu", max_position_embeddings=77, vocab_size=49408,
              bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
VAE = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16, scaling_factor=1.5305,
           shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
TRANSFORMER_PARAMS = (7.9e9, 8.3e9)  # SD3.5 Large's MMDiT: about 8.1 B


def build_full_model(dest: Path, *, device: str, dtype: Any, seed: int = 0) -> Path:
    """A diffusers folder of full-size SD3.5 Large with random weights in ``dtype``."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from invokeai_provider.models.stable_diffusion.clip_vocab import EOS, clip_tokenizer
    from invokeai_provider.models.testing.tiny_flux import t5_tokenizer
    from invokeai_provider.models.testing.tiny_sd3 import SCHEDULER

    build = pipeline_bench.random_builder(device, dtype, seed)
    transformer = build(lambda: SD3Transformer2DModel(**TRANSFORMER), 0)
    count = sum(p.numel() for p in transformer.parameters())
    if not TRANSFORMER_PARAMS[0] <= count <= TRANSFORMER_PARAMS[1]:
        raise SystemExit(f"bench_sd3: the transformer has {count:,} parameters, SD3.5 Large about 8.1 B")
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer, vae=build(lambda: AutoencoderKL(**VAE), 1),
        text_encoder=build(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L)), 2),
        tokenizer=clip_tokenizer(EOS),
        text_encoder_2=build(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)), 3),
        tokenizer_2=clip_tokenizer("!"),
        text_encoder_3=build(lambda: T5EncoderModel(T5Config(**T5_XXL)), 4), tokenizer_3=t5_tokenizer(256),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER))
    pipeline_bench.save_pipeline(pipeline, dest)
    return dest


def build_tiny_model(dest: Path) -> None:
    from invokeai_provider.models.testing.tiny_sd3 import build_sd3_model

    build_sd3_model(dest)


def t2i_graph(model: str, *, size: int, steps: int) -> dict[str, Any]:
    nodes = {"model": {"type": "sd3_model_loader", "model": model},
             "positive": {"type": "sd3_text_encoder", "prompt": PROMPT},
             "negative": {"type": "sd3_text_encoder", "prompt": ""},
             "denoise": {"type": "sd3_denoise", "steps": steps, "width": size, "height": size, "cfg_scale": CFG,
                         "seed": 0},
             "decode": {"type": "sd3_l2i"}}
    edges = [edge("model", field, prompt) for field in ("clip_l", "clip_g", "t5_encoder")
             for prompt in ("positive", "negative")]
    edges += [edge("model", "transformer", "denoise"), edge("positive", "conditioning", "denoise",
                                                              "positive_conditioning"),
              edge("negative", "conditioning", "denoise", "negative_conditioning"),
              edge("denoise", "latents", "decode"), edge("model", "vae", "decode")]
    return graph_doc("sd3-t2i", nodes, edges)


class DiffusersPath(pipeline_bench.DiffusersPath):
    pipeline = "StableDiffusion3Pipeline"

    def call_kwargs(self) -> dict[str, Any]:
        return dict(prompt=PROMPT, negative_prompt="", guidance_scale=CFG, max_sequence_length=256)


FAMILY = pipeline_bench.Family(
    script="bench_sd3", label="SD3.5", slug="sd3", description=__doc__.splitlines()[0], modes=MODE_DEFAULTS,
    architecture="SD3.5 Large", settings=f"CFG {CFG}", build_tiny=build_tiny_model, build_full=build_full_model,
    graph=t2i_graph, diffusers=DiffusersPath)


if __name__ == "__main__":
    pipeline_bench.main(FAMILY)
