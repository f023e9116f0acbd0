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

import argparse
import contextlib
import functools
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_sd  # the SD benchmark beside this file: environment checks, timer and table
from bench_flux import peak_gib, reset_peak
from bench_sd import Row, fmt_samples, make_timer, print_table

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
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
    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    from invokeai_provider.models.testing.tiny import fill_random_weights
    from invokeai_provider.models.testing.tiny_qwen3 import qwen3_tokenizer

    def build(factory: Any, offset: int) -> Any:
        with init_empty_weights(include_buffers=False):
            model = factory()
        fill_random_weights(model, torch.Generator(device=device).manual_seed(seed + offset), device=device,
                            dtype=dtype)
        return model.to("cpu").eval()

    transformer = build(lambda: ZImageTransformer2DModel(**TRANSFORMER), 0)
    print(f"  transformer: {sum(p.numel() for p in transformer.parameters()):,} parameters", flush=True)
    pipeline = ZImagePipeline(
        transformer=transformer, vae=build(lambda: AutoencoderKL(**VAE), 1),
        text_encoder=build(lambda: Qwen3Model(Qwen3Config(**QWEN3_4B)), 2), tokenizer=qwen3_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False))
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging, safe_serialization=True)
    staging.rename(dest)
    del pipeline, transformer
    gc.collect()
    return dest


def model_folder(mode: str, root: Path, *, device: str, dtype: Any) -> tuple[Path, float, bool]:
    """(folder, seconds to build, reused); a folder already in ``root`` is reused."""
    dest = root / (f"{mode}-z-image" if mode == "cpu-tiny" else f"{mode}-z-image-{str(dtype).removeprefix('torch.')}")
    if (dest / "model_index.json").is_file():
        return dest, 0.0, True
    started = time.perf_counter()
    if mode == "cpu-tiny":
        from invokeai_provider.models.testing.tiny_z_image import build_z_image_model

        build_z_image_model(dest)
    else:
        build_full_model(dest, device=device, dtype=dtype)
    return dest, time.perf_counter() - started, False


def t2i_graph(model: str, *, size: int, steps: int) -> dict[str, Any]:
    def edge(source: str, field: str, destination: str, destination_field: str = "") -> dict[str, Any]:
        return {"source": {"node_id": source, "field": field},
                "destination": {"node_id": destination, "field": destination_field or field}}

    nodes = {"model": {"type": "z_image_model_loader", "model": model},
             "prompt": {"type": "z_image_text_encoder", "prompt": PROMPT},
             "denoise": {"type": "z_image_denoise", "steps": steps, "width": size, "height": size,
                         "guidance_scale": 1.0, "seed": 0},
             "decode": {"type": "z_image_l2i"}}
    edges = [edge("model", "qwen3_encoder", "prompt"), edge("model", "transformer", "denoise"),
             edge("prompt", "conditioning", "denoise", "positive_conditioning"),
             edge("denoise", "latents", "decode"), edge("model", "vae", "decode")]
    return {"id": "z-image-t2i", "nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": edges}


class EnginePath:
    """Our engine, one ModelManager (warm cache); a batch of N sessions in one engine call."""

    def __init__(self, folder: Path, work: Path, *, device: str, dtype: Any, size: int, steps: int) -> None:
        from invokeai_provider.graph.graph import Graph
        from invokeai_provider.models.model_manager.binding import bind_model_fields
        from invokeai_provider.models.model_manager.install import install_model
        from invokeai_provider.models.model_manager.manager import ModelManager
        from invokeai_provider.models.model_manager.registry import ModelRegistry
        from invokeai_provider.storage.base import LocalArtifactBackend

        self.registry = ModelRegistry((work / "registry-z-image").as_uri())
        install_model(self.registry, str(folder), name="bench-z-image", inplace=True)
        self.manager = ModelManager(self.registry, device=device, dtype=dtype)
        self.graph = Graph.from_dict(bind_model_fields(t2i_graph("bench-z-image", size=size, steps=steps),
                                                       self.registry))
        self.backend = LocalArtifactBackend(work / "artifacts-z-image")
        self.runs = 0

    def sessions(self, seeds: list[int]) -> list[dict[str, Any]]:
        from invokeai_provider.graph.batch import Batch, BatchDatum, expand_batch

        batch = Batch(data=[[BatchDatum(node_path="denoise", field_name="seed", items=list(seeds))]])
        graphs, _ = expand_batch(self.graph, batch)
        return [g.to_dict() for g in graphs]

    def run(self, sessions: list[dict[str, Any]]) -> None:
        from invokeai_provider.execution.graph_runs import GraphJob, TaskEnvironment, run_graphs

        self.runs += 1
        jobs = [GraphJob(doc, TaskEnvironment(dag_id="bench_z_image", run_id=f"batch-{self.runs}", task_id="t2i",
                                              item=index, artifact_root=self.backend.uri("")), persist=["decode"])
                for index, doc in enumerate(sessions)]
        run_graphs(jobs, {"models": self.manager}, workflow_json=None)


class DiffusersPath:
    def __init__(self, folder: Path, *, device: str, dtype: Any, size: int, steps: int) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

        self.pipe = ZImagePipeline.from_pretrained(folder, torch_dtype=dtype, local_files_only=True).to(device)
        self.pipe.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, use_dynamic_shifting=True)
        self.pipe.set_progress_bar_config(disable=True)
        self.size, self.steps = size, steps

    def run(self, batch: int, seed: int) -> None:
        import torch

        images = self.pipe(PROMPT, num_inference_steps=self.steps, guidance_scale=0.0, height=self.size,
                           width=self.size, num_images_per_prompt=batch,
                           generator=torch.Generator(device="cpu").manual_seed(seed), output_type="pil").images
        assert len(images) == batch


def bench(args: argparse.Namespace, work: Path, *, device: str, dtype: Any, size: int, steps: int
          ) -> tuple[list[Row], list[str]]:
    """The two paths in one process, each timed alone on the device (the other's models freed between)."""
    timed = make_timer(device)
    folder, built_s, reused = model_folder(args.mode, work, device=device, dtype=dtype)
    notes = [f"model {'reused' if reused else f'built in {built_s:.0f} s'} at {folder}"]
    rows = {batch: Row("Z-Image", batch) for batch in args.batches}
    for path_name in ("engine", "diffusers"):
        started = time.perf_counter()
        if path_name == "engine":
            shutil.rmtree(work / "registry-z-image", ignore_errors=True)
            path: Any = EnginePath(folder, work, device=device, dtype=dtype, size=size, steps=steps)
            first = timed(functools.partial(path.run, path.sessions([0])))
        else:
            path = DiffusersPath(folder, device=device, dtype=dtype, size=size, steps=steps)
            first = timed(functools.partial(path.run, 1, 0))
        notes.append(f"{path_name}: set-up {time.perf_counter() - started - first:.1f} s, untimed first image "
                     f"{first:.1f} s")
        reset_peak(device)
        for batch in args.batches:
            seeds = [1000 * batch + i for i in range(batch * args.repeats)]
            for r in range(args.repeats):
                chunk = seeds[r * batch:(r + 1) * batch]
                run = (functools.partial(path.run, path.sessions(chunk)) if path_name == "engine"
                       else functools.partial(path.run, batch, chunk[0]))
                getattr(rows[batch], path_name).append(timed(run))
        notes.append(f"{path_name}: peak GPU memory {peak_gib(device):.1f} GiB over its timed runs")
        del path
        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
    for batch, row in rows.items():
        print(f"  batch {batch}: engine {fmt_samples(row.engine)}  diffusers {fmt_samples(row.diffusers)}", flush=True)
    return list(rows.values()), notes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=tuple(MODE_DEFAULTS), default=None,
                        help="gpu (default with CUDA): full-size random bf16 Z-Image-Turbo; cpu-tiny: the tiny model")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per batch: 5 gpu, 3 cpu")
    parser.add_argument("--batches", default="1", help="comma-separated batch sizes (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="override the mode's steps (8 gpu, 4 cpu-tiny)")
    parser.add_argument("--size", type=int, default=None, help="override the mode's size (multiple of 16)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the built model here and reuse it")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not args.batches or min(args.batches) < 1:
        parser.error("--batches needs positive integers")
    if args.size is not None and args.size % 16:
        parser.error("--size must be a multiple of 16")
    return args


def main() -> None:
    bench_sd.check_packages()
    bench_sd.quiet_libraries()
    args = parse_args()
    import torch

    from invokeai_provider.core.registry import load_node_packs

    args.mode = args.mode or ("gpu" if torch.cuda.is_available() else "cpu-tiny")
    if args.mode == "gpu" and not torch.cuda.is_available():
        sys.exit("bench_z_image: --mode gpu needs CUDA, and torch.cuda.is_available() is False here")
    device = "cuda" if args.mode == "gpu" else "cpu"
    size, steps, repeats = MODE_DEFAULTS[args.mode]
    size, steps, args.repeats = args.size or size, args.steps or steps, args.repeats or repeats
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # bfloat16, as InvokeAI runs Z-Image
    if device == "cpu":
        torch.set_num_threads(bench_sd.cpu_cores())
    load_node_packs()
    print(f"bench_z_image  mode={args.mode}  device={device}  dtype={str(dtype).removeprefix('torch.')}  "
          f"{size}x{size}, {steps} steps, no CFG; median of {args.repeats} timed runs per batch")
    if device == "cuda":
        print(f"  GPU: {torch.cuda.get_device_name(device)}")
    work_context = (contextlib.nullcontext(str(args.workdir)) if args.workdir
                    else tempfile.TemporaryDirectory(prefix="bench-z-image-"))
    started = time.perf_counter()
    with work_context as work_name:
        work = Path(work_name)
        work.mkdir(parents=True, exist_ok=True)
        rows, notes = bench(args, work, device=device, dtype=dtype, size=size, steps=steps)
    print()
    print("median seconds per image and images/s; engine/diffusers = engine img/s / diffusers img/s (target >= 0.95x)")
    print_table(rows)
    for note in notes:
        print(f"  {note}")
    print(f"  total wall time {time.perf_counter() - started:.0f} s")
    print(f"  median engine/diffusers at batch {rows[0].batch}: "
          f"{statistics.median(rows[0].diffusers) / statistics.median(rows[0].engine):.2f}x")


if __name__ == "__main__":
    main()
