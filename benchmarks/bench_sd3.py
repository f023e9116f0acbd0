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
from bench_flux import T5_XXL, peak_gib, reset_peak
from bench_sd import Row, fmt_samples, make_timer, print_table

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
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
    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from invokeai_provider.models.stable_diffusion.clip_vocab import EOS, clip_tokenizer
    from invokeai_provider.models.testing.tiny import fill_random_weights
    from invokeai_provider.models.testing.tiny_flux import t5_tokenizer
    from invokeai_provider.models.testing.tiny_sd3 import SCHEDULER

    def build(factory: Any, offset: int) -> Any:
        with init_empty_weights(include_buffers=False):
            model = factory()
        fill_random_weights(model, torch.Generator(device=device).manual_seed(seed + offset), device=device,
                            dtype=dtype)
        return model.to("cpu").eval()

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
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging, safe_serialization=True)
    staging.rename(dest)
    del pipeline, transformer
    gc.collect()
    return dest


def model_folder(mode: str, root: Path, *, device: str, dtype: Any) -> tuple[Path, float, bool]:
    """(folder, seconds to build, reused); a folder already in ``root`` is reused."""
    dest = root / (f"{mode}-sd3" if mode == "cpu-tiny" else f"{mode}-sd3-{str(dtype).removeprefix('torch.')}")
    if (dest / "model_index.json").is_file():
        return dest, 0.0, True
    started = time.perf_counter()
    if mode == "cpu-tiny":
        from invokeai_provider.models.testing.tiny_sd3 import build_sd3_model

        build_sd3_model(dest)
    else:
        build_full_model(dest, device=device, dtype=dtype)
    return dest, time.perf_counter() - started, False


def t2i_graph(model: str, *, size: int, steps: int) -> dict[str, Any]:
    def edge(source: str, field: str, destination: str, destination_field: str = "") -> dict[str, Any]:
        return {"source": {"node_id": source, "field": field},
                "destination": {"node_id": destination, "field": destination_field or field}}

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
    return {"id": "sd3-t2i", "nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": edges}


class EnginePath:
    """Our engine, one ModelManager (warm cache); a batch of N sessions in one engine call."""

    def __init__(self, folder: Path, work: Path, *, device: str, dtype: Any, size: int, steps: int) -> None:
        from invokeai_provider.graph.graph import Graph
        from invokeai_provider.models.model_manager.binding import bind_model_fields
        from invokeai_provider.models.model_manager.install import install_model
        from invokeai_provider.models.model_manager.manager import ModelManager
        from invokeai_provider.models.model_manager.registry import ModelRegistry
        from invokeai_provider.storage.base import LocalArtifactBackend

        self.registry = ModelRegistry((work / "registry-sd3").as_uri())
        install_model(self.registry, str(folder), name="bench-sd3", inplace=True)
        self.manager = ModelManager(self.registry, device=device, dtype=dtype)
        self.graph = Graph.from_dict(bind_model_fields(t2i_graph("bench-sd3", size=size, steps=steps),
                                                       self.registry))
        self.backend = LocalArtifactBackend(work / "artifacts-sd3")
        self.runs = 0

    def sessions(self, seeds: list[int]) -> list[dict[str, Any]]:
        from invokeai_provider.graph.batch import Batch, BatchDatum, expand_batch

        batch = Batch(data=[[BatchDatum(node_path="denoise", field_name="seed", items=list(seeds))]])
        graphs, _ = expand_batch(self.graph, batch)
        return [g.to_dict() for g in graphs]

    def run(self, sessions: list[dict[str, Any]]) -> None:
        from invokeai_provider.execution.graph_runs import GraphJob, TaskEnvironment, run_graphs

        self.runs += 1
        jobs = [GraphJob(doc, TaskEnvironment(dag_id="bench_sd3", run_id=f"batch-{self.runs}", task_id="t2i",
                                              item=index, artifact_root=self.backend.uri("")), persist=["decode"])
                for index, doc in enumerate(sessions)]
        run_graphs(jobs, {"models": self.manager}, workflow_json=None)


class DiffusersPath:
    def __init__(self, folder: Path, *, device: str, dtype: Any, size: int, steps: int) -> None:
        from diffusers import StableDiffusion3Pipeline

        self.pipe = StableDiffusion3Pipeline.from_pretrained(folder, torch_dtype=dtype,
                                                             local_files_only=True).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.size, self.steps = size, steps

    def run(self, batch: int, seed: int) -> None:
        import torch

        images = self.pipe(PROMPT, negative_prompt="", num_inference_steps=self.steps, guidance_scale=CFG,
                           height=self.size, width=self.size, num_images_per_prompt=batch, max_sequence_length=256,
                           generator=torch.Generator(device="cpu").manual_seed(seed), output_type="pil").images
        assert len(images) == batch


def bench(args: argparse.Namespace, work: Path, *, device: str, dtype: Any, size: int, steps: int
          ) -> tuple[list[Row], list[str]]:
    """The two paths in one process, each timed alone on the device (the other's models freed between)."""
    timed = make_timer(device)
    folder, built_s, reused = model_folder(args.mode, work, device=device, dtype=dtype)
    notes = [f"model {'reused' if reused else f'built in {built_s:.0f} s'} at {folder}"]
    rows = {batch: Row("SD3.5", batch) for batch in args.batches}
    for path_name in ("engine", "diffusers"):
        started = time.perf_counter()
        if path_name == "engine":
            shutil.rmtree(work / "registry-sd3", ignore_errors=True)
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
                        help="gpu (default with CUDA): full-size random bf16 SD3.5 Large; cpu-tiny: the tiny model")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per batch: 5 gpu, 3 cpu-tiny")
    parser.add_argument("--batches", default="1", help="comma-separated batch sizes (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="override the mode's steps (28 gpu, 4 cpu-tiny)")
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
        sys.exit("bench_sd3: --mode gpu needs CUDA, and torch.cuda.is_available() is False here")
    device = "cuda" if args.mode == "gpu" else "cpu"
    size, steps, repeats = MODE_DEFAULTS[args.mode]
    size, steps, args.repeats = args.size or size, args.steps or steps, args.repeats or repeats
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if device == "cpu":
        torch.set_num_threads(bench_sd.cpu_cores())
    load_node_packs()
    print(f"bench_sd3  mode={args.mode}  device={device}  dtype={str(dtype).removeprefix('torch.')}  "
          f"{size}x{size}, {steps} steps, CFG {CFG}; median of {args.repeats} timed runs per batch")
    if device == "cuda":
        print(f"  GPU: {torch.cuda.get_device_name(device)}")
    work_context = (contextlib.nullcontext(str(args.workdir)) if args.workdir
                    else tempfile.TemporaryDirectory(prefix="bench-sd3-"))
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
