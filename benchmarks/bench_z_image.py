"""Z-Image text-to-image throughput: our engine's InvokeAI Z-Image graph against diffusers' ZImagePipeline, in one run.

    .venv/bin/python benchmarks/bench_z_image.py                      # --mode gpu when CUDA is available
    .venv/bin/python benchmarks/bench_z_image.py --mode cpu-tiny --repeats 2

Modes:
- ``gpu``: the full-size Z-Image-Turbo architecture (the 6 B-parameter S3-DiT transformer: 3,840 wide, 30 layers and
  2 noise and 2 context refiner layers; Qwen3-4B as the text encoder; FLUX.1's 16-channel VAE; the dimensions as
  published for Tongyi-MAI/Z-Image-Turbo) with RANDOM bfloat16 weights, built on the GPU and saved once as a
  diffusers folder, at 1024x1024 and 8 steps (Turbo's), no CFG. Random weights time like real ones (same shapes,
  same kernels); the images are noise. The tokenizer is the small offline Qwen3-format one of
  ``invokeai_provider.models.testing.tiny_qwen3`` (its ids fit Qwen3's vocabulary; the prompt is padded to 512
  tokens either way).
- ``cpu-tiny``: the tiny Z-Image model at 64x64 and 4 steps: shows that the script works and measures per-image
  overhead on the CPU. These figures are not the GPU target.

Both paths load the same folder in the same dtype on the same device and make the same images from the same noise
and schedule:
- engine: the InvokeAI graph z_image_model_loader -> z_image_text_encoder -> z_image_denoise -> z_image_l2i with one
  ``ModelManager``; batch N is N sessions (a Batch over the seed) in one engine call, each saving a PNG (Z-Image's
  denoise nodes run one after another: they are not batched);
- diffusers: ``ZImagePipeline`` from the folder, one call with ``num_images_per_prompt=N`` and
  ``output_type="pil"``, its scheduler set to InvokeAI's resolution-dependent shift (``use_dynamic_shifting``).

Timings exclude the first load, synchronise CUDA around each sample and report medians. Each path runs in its own
phase (its models freed before the other's load), so its peak GPU memory over its timed runs is its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pipeline_bench  # the harness beside this file: model folder, the two paths, timing and table
from pipeline_bench import PROMPT, edge, graph_doc

MODE_DEFAULTS = {"gpu": (1024, 8, 5), "cpu-tiny": (64, 4, 3)}  # size, steps, repeats
# Z-Image-Turbo's public architecture (Tongyi-MAI/Z-Image-Turbo: transformer, text_encoder Qwen3-4B, FLUX's vae)
TRANSFORMER = dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=3840, n_layers=30,
                   n_refiner_layers=2, n_heads=30, n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560,
                   rope_theta=256.0, t_scale=1000.0, axes_dims=[32, 48, 48], axes_lens=[1024, 512, 512])
QWEN3_4B = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                rms_norm_eps=1e-6, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
VAE = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16, scaling_factor=0.3611,
           shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)


def build_full_model(dest: Path, *, device: str, dtype: Any, seed: int = 0) -> Path:
    """A diffusers folder of full-size Z-Image-Turbo with random weights in ``dtype``."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    from invokeai_provider.models.testing.tiny_qwen3 import qwen3_tokenizer

    build = pipeline_bench.random_builder(device, dtype, seed)
    transformer = build(lambda: ZImageTransformer2DModel(**TRANSFORMER), 0)
    print(f"  transformer: {sum(p.numel() for p in transformer.parameters()):,} parameters", flush=True)
    pipeline = ZImagePipeline(
        transformer=transformer, vae=build(lambda: AutoencoderKL(**VAE), 1),
        text_encoder=build(lambda: Qwen3Model(Qwen3Config(**QWEN3_4B)), 2), tokenizer=qwen3_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False))
    pipeline_bench.save_pipeline(pipeline, dest)
    return dest


def build_tiny_model(dest: Path) -> None:
    from invokeai_provider.models.testing.tiny_z_image import build_z_image_model

    build_z_image_model(dest)


def t2i_graph(model: str, *, size: int, steps: int) -> dict[str, Any]:
    nodes = {"model": {"type": "z_image_model_loader", "model": model},
             "prompt": {"type": "z_image_text_encoder", "prompt": PROMPT},
             "denoise": {"type": "z_image_denoise", "steps": steps, "width": size, "height": size,
                         "guidance_scale": 1.0, "seed": 0},
             "decode": {"type": "z_image_l2i"}}
    edges = [edge("model", "qwen3_encoder", "prompt"), edge("model", "transformer", "denoise"),
             edge("prompt", "conditioning", "denoise", "positive_conditioning"),
             edge("denoise", "latents", "decode"), edge("model", "vae", "decode")]
    return graph_doc("z-image-t2i", nodes, edges)


class DiffusersPath(pipeline_bench.DiffusersPath):
    pipeline = "ZImagePipeline"

    def prepare(self) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        # InvokeAI's resolution-dependent shift
        self.pipe.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, use_dynamic_shifting=True)

    def call_kwargs(self) -> dict[str, Any]:
        return dict(prompt=PROMPT, guidance_scale=0.0)


FAMILY = pipeline_bench.Family(
    script="bench_z_image", label="Z-Image", slug="z-image", description=__doc__.splitlines()[0],
    modes=MODE_DEFAULTS, architecture="Z-Image-Turbo", settings="no CFG", build_tiny=build_tiny_model,
    build_full=build_full_model, graph=t2i_graph, diffusers=DiffusersPath)


if __name__ == "__main__":
    pipeline_bench.main(FAMILY)
