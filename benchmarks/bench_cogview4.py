"""CogView4 text-to-image throughput: our engine's InvokeAI CogView4 graph against diffusers' CogView4Pipeline.

    .venv/bin/python benchmarks/bench_cogview4.py                      # --mode gpu when CUDA is available
    .venv/bin/python benchmarks/bench_cogview4.py --mode cpu-tiny --repeats 2

Modes:
- ``gpu``: the full-size CogView4-6B architecture (transformer 28 blocks of 4,096 wide, the GLM-4-9B text encoder,
  the 16-channel VAE of [128, 512, 1024, 1024]) with RANDOM bfloat16 weights, built on the GPU and saved once as a
  diffusers folder, at 1024x1024, 50 steps and CFG 3.5 (two transformer passes a step). Random weights time like
  real ones (same shapes, same kernels); the images are noise. The tokenizer is the small offline GLM-format one of
  ``invokeai_provider.models.testing.tiny_cogview4`` (its ids fit GLM-4's vocabulary; it splits a prompt into a few
  more tokens than GLM-4's own, which only the prompt encoding feels).
- ``cpu-tiny``: the tiny CogView4 model at 64x64 and 4 steps: shows that the script works and measures per-image
  overhead on the CPU. These figures are not the GPU target.

Both paths load the same folder in the same dtype on the same device and make the same images from the same noise
and schedule:
- engine: the InvokeAI graph cogview4_model_loader -> two cogview4_text_encoder (prompt, empty negative) ->
  cogview4_denoise -> cogview4_l2i with one ``ModelManager``; batch N is N sessions (a Batch over the seed) in one
  engine call, each saving a PNG (CogView4's denoise nodes run one after another: they are not batched);
- diffusers: ``CogView4Pipeline`` from the folder, one call with ``num_images_per_prompt=N``, given InvokeAI's
  timesteps and sigmas (its default schedule differs) and ``output_type="pil"``.

Timings exclude the first load, synchronise CUDA around each sample and report medians. Each path runs in its own
phase (its models freed before the other's load), so its peak GPU memory over its timed runs is its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pipeline_bench  # the harness beside this file: model folder, the two paths, timing and table
from pipeline_bench import PROMPT, edge, graph_doc

CFG = 3.5
MODE_DEFAULTS = {"gpu": (1024, 50, 5), "cpu-tiny": (64, 4, 3)}  # size, steps, repeats
# CogView4-6B's public architecture (THUDM/CogView4-6B: transformer, vae; text_encoder is GLM-4-9B)
TRANSFORMER = dict(patch_size=2, in_channels=16, out_channels=16, num_layers=28, attention_head_dim=128,
                   num_attention_heads=32, text_embed_dim=4096, time_embed_dim=512, condition_dim=256,
                   pos_embed_max_size=128, sample_size=128, rope_axes_dim=(256, 256))
GLM_4_9B = dict(vocab_size=151552, hidden_size=4096, intermediate_size=13696, num_hidden_layers=40,
                num_attention_heads=32, num_key_value_heads=2, head_dim=128, max_position_embeddings=131072,
                attention_bias=True, rms_norm_eps=1.5625e-07, pad_token_id=151329)
VAE = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           block_out_channels=(128, 512, 1024, 1024), layers_per_block=3, latent_channels=16, sample_size=1024,
           scaling_factor=1.0, use_quant_conv=False, use_post_quant_conv=False)


def build_full_model(dest: Path, *, device: str, dtype: Any, seed: int = 0) -> Path:
    """A diffusers folder of full-size CogView4-6B with random weights in ``dtype``."""
    from diffusers import AutoencoderKL, CogView4Pipeline, CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import GlmConfig, GlmModel

    from invokeai_provider.models.testing.tiny_cogview4 import SCHEDULER, glm_tokenizer

    build = pipeline_bench.random_builder(device, dtype, seed)
    pipeline = CogView4Pipeline(
        transformer=build(lambda: CogView4Transformer2DModel(**TRANSFORMER), 0),
        vae=build(lambda: AutoencoderKL(**VAE), 1), text_encoder=build(lambda: GlmModel(GlmConfig(**GLM_4_9B)), 2),
        tokenizer=glm_tokenizer(), scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER))
    pipeline_bench.save_pipeline(pipeline, dest)
    return dest


def build_tiny_model(dest: Path) -> None:
    from invokeai_provider.models.testing.tiny_cogview4 import build_cogview4_model

    build_cogview4_model(dest)


def t2i_graph(model: str, *, size: int, steps: int) -> dict[str, Any]:
    nodes = {"model": {"type": "cogview4_model_loader", "model": model},
             "prompt": {"type": "cogview4_text_encoder", "prompt": PROMPT},
             "negative": {"type": "cogview4_text_encoder", "prompt": ""},
             "denoise": {"type": "cogview4_denoise", "steps": steps, "width": size, "height": size, "cfg_scale": CFG,
                         "seed": 0},
             "decode": {"type": "cogview4_l2i"}}
    edges = [edge("model", "glm_encoder", "prompt"), edge("model", "glm_encoder", "negative"),
             edge("model", "transformer", "denoise"),
             edge("prompt", "conditioning", "denoise", "positive_conditioning"),
             edge("negative", "conditioning", "denoise", "negative_conditioning"),
             edge("denoise", "latents", "decode"), edge("model", "vae", "decode")]
    return graph_doc("cogview4-t2i", nodes, edges)


class DiffusersPath(pipeline_bench.DiffusersPath):
    pipeline = "CogView4Pipeline"

    def prepare(self) -> None:
        from invokeai_provider.models.cogview4 import sampling

        timesteps = sampling.timesteps(self.steps)[:-1]  # InvokeAI's (the pipeline truncates x1000 to whole numbers)
        self.schedule = {"timesteps": [round(t * 1000) for t in timesteps], "sigmas": timesteps}

    def call_kwargs(self) -> dict[str, Any]:
        return dict(prompt=PROMPT, negative_prompt="", guidance_scale=CFG, **self.schedule)


FAMILY = pipeline_bench.Family(
    script="bench_cogview4", label="CogView4", slug="cogview4", description=__doc__.splitlines()[0],
    modes=MODE_DEFAULTS, architecture="CogView4-6B", settings=f"CFG {CFG}", build_tiny=build_tiny_model,
    build_full=build_full_model, graph=t2i_graph, diffusers=DiffusersPath, size_multiple=32)


if __name__ == "__main__":
    pipeline_bench.main(FAMILY)
