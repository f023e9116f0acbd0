"""FLUX.2 Klein text-to-image throughput: our engine's InvokeAI FLUX.2 graph against diffusers' Flux2KleinPipeline.

    .venv/bin/python benchmarks/bench_flux2.py                      # --mode gpu when CUDA is available
    .venv/bin/python benchmarks/bench_flux2.py --mode cpu-tiny --repeats 2

Modes:
- ``gpu``: the full-size FLUX.2 Klein 4B architecture (transformer 3,072 wide with 5 double and 20 single blocks,
  Qwen3-4B as the text encoder, the 32-channel ``AutoencoderKLFlux2``; the dimensions as published for
  black-forest-labs/FLUX.2-klein-4B) with RANDOM bfloat16 weights, built on the GPU and saved once as a diffusers
  folder, at 1024x1024 and 4 steps (the distilled model's), CFG 1. Random weights time like real ones (same shapes,
  same kernels); the images are noise. The tokenizer is the small offline Qwen3-format one of
  ``invokeai_provider.models.testing.tiny_qwen3`` (its ids fit Qwen3's vocabulary; the prompt is padded to 512
  tokens either way).
- ``cpu-tiny``: the tiny Klein model at 64x64 and 4 steps: shows that the script works and measures per-image
  overhead on the CPU. These figures are not the GPU target.

Both paths load the same folder in the same dtype on the same device and make the same images from the same noise
and schedule:
- engine: the InvokeAI graph flux2_klein_model_loader -> flux2_klein_text_encoder -> flux2_denoise ->
  flux2_vae_decode with one ``ModelManager``; batch N is N sessions (a Batch over the seed) in one engine call,
  each saving a PNG (FLUX.2's denoise nodes run one after another: they are not batched);
- diffusers: ``Flux2KleinPipeline`` from the folder, one call with ``num_images_per_prompt=N`` and
  ``output_type="pil"``, its schedule shift set to InvokeAI's (mu 2.02; diffusers computes its own from the size).

Timings exclude the first load, synchronise CUDA around each sample and report medians. Each path runs in its own
phase (its models freed before the other's load), so its peak GPU memory over its timed runs is its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pipeline_bench  # the harness beside this file: model folder, the two paths, timing and table
from pipeline_bench import PROMPT, edge, graph_doc

CFG = 1.0
SEQ = 512
MODE_DEFAULTS = {"gpu": (1024, 4, 5), "cpu-tiny": (64, 4, 3)}  # size, steps, repeats
# FLUX.2 Klein 4B's published architecture (transformer and vae), its text encoder Qwen3-4B
TRANSFORMER = dict(patch_size=1, in_channels=128, num_layers=5, num_single_layers=20, attention_head_dim=128,
                   num_attention_heads=24, joint_attention_dim=7680, timestep_guidance_channels=256, mlp_ratio=3.0,
                   axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, guidance_embeds=False)
QWEN3_4B = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                tie_word_embeddings=True, rms_norm_eps=1e-6, architectures=["Qwen3ForCausalLM"])


def build_full_model(dest: Path, *, device: str, dtype: Any, seed: int = 0) -> Path:
    """A diffusers folder of full-size FLUX.2 Klein 4B with random weights in ``dtype``."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from invokeai_provider.models.testing.tiny_flux2 import SCHEDULER
    from invokeai_provider.models.testing.tiny_qwen3 import qwen3_tokenizer

    build = pipeline_bench.random_builder(device, dtype, seed)
    encoder = build(lambda: Qwen3ForCausalLM(Qwen3Config(**QWEN3_4B)), 2)
    encoder.tie_weights()
    pipeline = Flux2KleinPipeline(
        transformer=build(lambda: Flux2Transformer2DModel(**TRANSFORMER), 0), vae=build(AutoencoderKLFlux2, 1),
        text_encoder=encoder, tokenizer=qwen3_tokenizer(), scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        is_distilled=True)
    pipeline_bench.save_pipeline(pipeline, dest)
    return dest


def build_tiny_model(dest: Path) -> None:
    from invokeai_provider.models.testing.tiny_flux2 import build_flux2_model

    build_flux2_model(dest)


def t2i_graph(model: str, *, size: int, steps: int) -> dict[str, Any]:
    nodes = {"model": {"type": "flux2_klein_model_loader", "model": model, "max_seq_len": SEQ},
             "prompt": {"type": "flux2_klein_text_encoder", "prompt": PROMPT, "max_seq_len": SEQ},
             "denoise": {"type": "flux2_denoise", "num_steps": steps, "width": size, "height": size,
                         "cfg_scale": CFG, "seed": 0},
             "decode": {"type": "flux2_vae_decode"}}
    edges = [edge("model", "qwen3_encoder", "prompt"), edge("model", "transformer", "denoise"),
             edge("model", "vae", "denoise"), edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
             edge("denoise", "latents", "decode"), edge("model", "vae", "decode")]
    return graph_doc("flux2-t2i", nodes, edges)


class DiffusersPath(pipeline_bench.DiffusersPath):
    pipeline = "Flux2KleinPipeline"

    def prepare(self) -> None:
        from diffusers.pipelines.flux2 import pipeline_flux2_klein

        from invokeai_provider.models.flux2.sampling import MU

        # InvokeAI's schedule shift (a fixed mu), where diffusers computes one from the size and step count
        pipeline_flux2_klein.compute_empirical_mu = lambda image_seq_len, num_steps: MU

    def call_kwargs(self) -> dict[str, Any]:
        return dict(prompt=PROMPT, guidance_scale=CFG, max_sequence_length=SEQ)


FAMILY = pipeline_bench.Family(
    script="bench_flux2", label="FLUX.2 Klein", slug="flux2", description=__doc__.splitlines()[0],
    modes=MODE_DEFAULTS, architecture="FLUX.2 Klein 4B", settings=f"CFG {CFG}", build_tiny=build_tiny_model,
    build_full=build_full_model, graph=t2i_graph, diffusers=DiffusersPath)


if __name__ == "__main__":
    pipeline_bench.main(FAMILY)
