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
    import torch
    from accelerate import init_empty_weights
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from invokeai_provider.models.testing.tiny import fill_random_weights
    from invokeai_provider.models.testing.tiny_flux2 import SCHEDULER
    from invokeai_provider.models.testing.tiny_qwen3 import qwen3_tokenizer

    def build(factory: Any, offset: int) -> Any:
        with init_empty_weights(include_buffers=False):
            model = factory()
        fill_random_weights(model, torch.Generator(device=device).manual_seed(seed + offset), device=device,
                            dtype=dtype)
        return model.to("cpu").eval()

    encoder = build(lambda: Qwen3ForCausalLM(Qwen3Config(**QWEN3_4B)), 2)
    encoder.tie_weights()
    pipeline = Flux2KleinPipeline(
        transformer=build(lambda: Flux2Transformer2DModel(**TRANSFORMER), 0), vae=build(AutoencoderKLFlux2, 1),
        text_encoder=encoder, tokenizer=qwen3_tokenizer(), scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        is_distilled=True)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging, safe_serialization=True)
    staging.rename(dest)
    del pipeline
    gc.collect()
    return dest


def model_folder(mode: str, root: Path, *, device: str, dtype: Any) -> tuple[Path, float, bool]:
    """(folder, seconds to build, reused); a folder already in ``root`` is reused."""
    dest = root / (f"{mode}-flux2" if mode == "cpu-tiny" else f"{mode}-flux2-{str(dtype).removeprefix('torch.')}")
    if (dest / "model_index.json").is_file():
        return dest, 0.0, True
    started = time.perf_counter()
    if mode == "cpu-tiny":
        from invokeai_provider.models.testing.tiny_flux2 import build_flux2_model

        build_flux2_model(dest)
    else:
        build_full_model(dest, device=device, dtype=dtype)
    return dest, time.perf_counter() - started, False


def t2i_graph(model: str, *, size: int, steps: int) -> dict[str, Any]:
    def edge(source: str, field: str, destination: str, destination_field: str = "") -> dict[str, Any]:
        return {"source": {"node_id": source, "field": field},
                "destination": {"node_id": destination, "field": destination_field or field}}

    nodes = {"model": {"type": "flux2_klein_model_loader", "model": model, "max_seq_len": SEQ},
             "prompt": {"type": "flux2_klein_text_encoder", "prompt": PROMPT, "max_seq_len": SEQ},
             "denoise": {"type": "flux2_denoise", "num_steps": steps, "width": size, "height": size,
                         "cfg_scale": CFG, "seed": 0},
             "decode": {"type": "flux2_vae_decode"}}
    edges = [edge("model", "qwen3_encoder", "prompt"), edge("model", "transformer", "denoise"),
             edge("model", "vae", "denoise"), edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
             edge("denoise", "latents", "decode"), edge("model", "vae", "decode")]
    return {"id": "flux2-t2i", "nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": edges}


class EnginePath:
    """Our engine, one ModelManager (warm cache); a batch of N sessions in one engine call."""

    def __init__(self, folder: Path, work: Path, *, device: str, dtype: Any, size: int, steps: int) -> None:
        from invokeai_provider.graph.graph import Graph
        from invokeai_provider.models.model_manager.binding import bind_model_fields
        from invokeai_provider.models.model_manager.install import install_model
        from invokeai_provider.models.model_manager.manager import ModelManager
        from invokeai_provider.models.model_manager.registry import ModelRegistry
        from invokeai_provider.storage.base import LocalArtifactBackend

        self.registry = ModelRegistry((work / "registry-flux2").as_uri())
        install_model(self.registry, str(folder), name="bench-flux2", inplace=True)
        self.manager = ModelManager(self.registry, device=device, dtype=dtype)
        self.graph = Graph.from_dict(bind_model_fields(t2i_graph("bench-flux2", size=size, steps=steps),
                                                       self.registry))
        self.backend = LocalArtifactBackend(work / "artifacts-flux2")
        self.runs = 0

    def sessions(self, seeds: list[int]) -> list[dict[str, Any]]:
        from invokeai_provider.graph.batch import Batch, BatchDatum, expand_batch

        batch = Batch(data=[[BatchDatum(node_path="denoise", field_name="seed", items=list(seeds))]])
        graphs, _ = expand_batch(self.graph, batch)
        return [g.to_dict() for g in graphs]

    def run(self, sessions: list[dict[str, Any]]) -> None:
        from invokeai_provider.execution.graph_runs import GraphJob, TaskEnvironment, run_graphs

        self.runs += 1
        jobs = [GraphJob(doc, TaskEnvironment(dag_id="bench_flux2", run_id=f"batch-{self.runs}", task_id="t2i",
                                              item=index, artifact_root=self.backend.uri("")), persist=["decode"])
                for index, doc in enumerate(sessions)]
        run_graphs(jobs, {"models": self.manager}, workflow_json=None)


class DiffusersPath:
    def __init__(self, folder: Path, *, device: str, dtype: Any, size: int, steps: int) -> None:
        from diffusers import Flux2KleinPipeline
        from diffusers.pipelines.flux2 import pipeline_flux2_klein

        from invokeai_provider.models.flux2.sampling import MU

        # InvokeAI's schedule shift (a fixed mu), where diffusers computes one from the size and step count
        pipeline_flux2_klein.compute_empirical_mu = lambda image_seq_len, num_steps: MU
        self.pipe = Flux2KleinPipeline.from_pretrained(folder, torch_dtype=dtype, local_files_only=True).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.size, self.steps = size, steps

    def run(self, batch: int, seed: int) -> None:
        import torch

        images = self.pipe(prompt=PROMPT, num_inference_steps=self.steps, guidance_scale=CFG, height=self.size,
                           width=self.size, num_images_per_prompt=batch, max_sequence_length=SEQ,
                           generator=torch.Generator(device="cpu").manual_seed(seed), output_type="pil").images
        assert len(images) == batch


def bench(args: argparse.Namespace, work: Path, *, device: str, dtype: Any, size: int, steps: int
          ) -> tuple[list[Row], list[str]]:
    """The two paths in one process, each timed alone on the device (the other's models freed between)."""
    timed = make_timer(device)
    folder, built_s, reused = model_folder(args.mode, work, device=device, dtype=dtype)
    notes = [f"model {'reused' if reused else f'built in {built_s:.0f} s'} at {folder}"]
    rows = {batch: Row("FLUX.2 Klein", batch) for batch in args.batches}
    for path_name in ("engine", "diffusers"):
        started = time.perf_counter()
        if path_name == "engine":
            shutil.rmtree(work / "registry-flux2", ignore_errors=True)
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
                        help="gpu (default with CUDA): full-size random bf16 FLUX.2 Klein 4B; cpu-tiny: the tiny model")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per batch: 5 gpu, 3 cpu")
    parser.add_argument("--batches", default="1", help="comma-separated batch sizes (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="override the mode's steps (4 gpu, 4 cpu-tiny)")
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
        sys.exit("bench_flux2: --mode gpu needs CUDA, and torch.cuda.is_available() is False here")
    device = "cuda" if args.mode == "gpu" else "cpu"
    size, steps, repeats = MODE_DEFAULTS[args.mode]
    size, steps, args.repeats = args.size or size, args.steps or steps, args.repeats or repeats
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # bfloat16 as InvokeAI runs FLUX.2
    if device == "cpu":
        torch.set_num_threads(bench_sd.cpu_cores())
    load_node_packs()
    print(f"bench_flux2  mode={args.mode}  device={device}  dtype={str(dtype).removeprefix('torch.')}  "
          f"{size}x{size}, {steps} steps, CFG {CFG}; median of {args.repeats} timed runs per batch")
    if device == "cuda":
        print(f"  GPU: {torch.cuda.get_device_name(device)}")
    work_context = (contextlib.nullcontext(str(args.workdir)) if args.workdir
                    else tempfile.TemporaryDirectory(prefix="bench-flux2-"))
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
