"""FLUX.1 text-to-image throughput: our engine's InvokeAI FLUX graph against diffusers' FluxPipeline, in one run.

    .venv/bin/python benchmarks/bench_flux.py                      # --mode gpu when CUDA is available
    .venv/bin/python benchmarks/bench_flux.py --mode cpu-smoke --repeats 2

Modes:
- ``gpu``: the full-size FLUX.1-dev architecture (transformer 11.9 B parameters, T5-XXL encoder, CLIP-L, the
  16-channel VAE) with RANDOM bfloat16 weights, built on the GPU and saved once as a diffusers folder, at
  1024x1024 and 28 steps, guidance 3.5. Random weights time like real ones (same shapes, same kernels); the images
  are noise. T5's tokenizer is the small offline one of ``invokeai_provider.models.testing.tiny_flux`` (token ids
  fit T5-XXL's vocabulary; the sequence is padded to 512 either way).
- ``cpu-smoke``: the tiny FLUX model at 64x64 and 4 steps: shows that the script works and measures per-image
  overhead on CPU. These figures are not the GPU target.

Both paths load the same folder in the same dtype on the same device and make the same images from the same noise:
- engine: the InvokeAI graph flux_model_loader -> flux_text_encoder -> flux_denoise -> flux_vae_decode with one
  ``ModelManager``; batch N is N sessions (a Batch over the seed) in one engine call, as a chunk of a mapped task
  runs them (the prompt encoded once from the node cache, the denoise nodes batched), each saving a PNG;
- diffusers: ``FluxPipeline`` from the folder, one call with ``num_images_per_prompt=N``, ``output_type="pil"``.

Timings exclude the first load, synchronise CUDA around each sample and report medians. The two full-size models do
not fit on one GPU side by side, so each path runs in its own phase (its models freed before the other's load) and
its peak GPU memory (``torch.cuda.max_memory_allocated``) over its timed runs is its own; on a shared machine, run
the script twice and compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pipeline_bench  # the harness beside this file: model folder, the two paths, timing and table
from pipeline_bench import PROMPT, edge, graph_doc

GUIDANCE = 3.5
MODE_DEFAULTS = {"gpu": (1024, 28, 5), "cpu-smoke": (64, 4, 3)}  # size, steps, repeats
# FLUX.1-dev's public architecture; parameter counts as the public model's (the transformer's 11,901,408,320)
TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                   num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                   axes_dims_rope=(16, 56, 56))
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
              dense_act_fn="gelu_new", is_gated_act=True)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768,
              hidden_act="quick_gelu", max_position_embeddings=77, vocab_size=49408, bos_token_id=49406,
              eos_token_id=49407, pad_token_id=49407)
VAE = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16, scaling_factor=0.3611,
           shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
TRANSFORMER_PARAMS = 11_901_408_320


def build_full_model(dest: Path, *, device: str, dtype: Any, seed: int = 0) -> Path:
    """A diffusers folder of full-size FLUX.1-dev with random weights in ``dtype``."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from invokeai_provider.models.stable_diffusion.clip_vocab import clip_tokenizer
    from invokeai_provider.models.testing.tiny_flux import SCHEDULERS, t5_tokenizer

    build = pipeline_bench.random_builder(device, dtype, seed)
    transformer = build(lambda: FluxTransformer2DModel(**TRANSFORMER), 0)
    count = sum(p.numel() for p in transformer.parameters())
    if count != TRANSFORMER_PARAMS:
        raise SystemExit(f"bench_flux: the transformer has {count:,} parameters, FLUX.1-dev {TRANSFORMER_PARAMS:,}")
    pipeline = FluxPipeline(
        transformer=transformer, vae=build(lambda: AutoencoderKL(**VAE), 1),
        text_encoder=build(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L)), 2), tokenizer=clip_tokenizer(),
        text_encoder_2=build(lambda: T5EncoderModel(T5Config(**T5_XXL)), 3), tokenizer_2=t5_tokenizer(512),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULERS["dev"]))
    pipeline_bench.save_pipeline(pipeline, dest)
    return dest


def build_tiny_model(dest: Path) -> None:
    from invokeai_provider.models.testing.tiny_flux import build_flux_model

    build_flux_model(dest, variant="dev")


def t2i_graph(model: str, *, size: int, steps: int) -> dict[str, Any]:
    nodes = {"model": {"type": "flux_model_loader", "model": model},
             "prompt": {"type": "flux_text_encoder", "prompt": PROMPT},
             "denoise": {"type": "flux_denoise", "num_steps": steps, "width": size, "height": size,
                         "guidance": GUIDANCE, "seed": 0},
             "decode": {"type": "flux_vae_decode"}}
    edges = [edge("model", "clip", "prompt"), edge("model", "t5_encoder", "prompt"),
             edge("model", "max_seq_len", "prompt", "t5_max_seq_len"), edge("model", "transformer", "denoise"),
             edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
             edge("denoise", "latents", "decode"), edge("model", "vae", "decode")]
    return graph_doc("flux-t2i", nodes, edges)


class DiffusersPath(pipeline_bench.DiffusersPath):
    pipeline = "FluxPipeline"

    def call_kwargs(self) -> dict[str, Any]:
        return dict(prompt=PROMPT, guidance_scale=GUIDANCE, max_sequence_length=512)


FAMILY = pipeline_bench.Family(
    script="bench_flux", label="FLUX.1", slug="flux", description=__doc__.splitlines()[0], modes=MODE_DEFAULTS,
    architecture="FLUX.1-dev", settings=f"guidance {GUIDANCE}", build_tiny=build_tiny_model,
    build_full=build_full_model, graph=t2i_graph, diffusers=DiffusersPath)


if __name__ == "__main__":
    pipeline_bench.main(FAMILY)
