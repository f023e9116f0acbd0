"""The harness the per-family text-to-image benchmarks share (bench_flux, bench_sd3, bench_cogview4, bench_flux2,
bench_z_image): our engine's InvokeAI graph against the family's diffusers pipeline, each path timed alone.

A family script describes only what is its own in a ``Family``: its modes, how its full-size random-weight model and
its tiny model are built, its engine graph and its diffusers call. This module makes the model folder, runs both
paths (the engine as a chunk of a mapped task runs a batch's sessions; diffusers as one pipeline call with
``num_images_per_prompt=N``), and prints the timings, the table and each path's peak GPU memory. Environment checks,
the timer and the table come from ``bench_sd`` beside this file.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_sd  # the SD benchmark beside this file: environment checks, timer and table
from bench_sd import Row, fmt_samples, make_timer, print_table

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"


# ---------------------------------------------------------------------------------------------------------------------
# What a family script gives
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    script: str  # "bench_flux": messages and the engine's dag id
    label: str  # the table's model column
    slug: str  # names the model folder, the registry entry, the work folders and the graph
    description: str  # the script's --help line
    modes: dict[str, tuple[int, int, int]]  # MODE_DEFAULTS: "gpu" and one CPU smoke mode -> (size, steps, repeats)
    architecture: str  # what --mode gpu builds, for --help
    settings: str  # the guidance part of the header line ("CFG 3.5", "no CFG")
    build_tiny: Callable[[Path], Any]  # (dest): the tiny model's diffusers folder
    build_full: Callable[..., Any]  # (dest, *, device, dtype): the full-size random-weight diffusers folder
    graph: Callable[..., dict[str, Any]]  # (model name, *, size, steps): the engine's text-to-image graph
    diffusers: type[DiffusersPath]
    size_multiple: int = 16

    @property
    def cpu_mode(self) -> str:
        return next(mode for mode in self.modes if mode != "gpu")


def random_builder(device: str, dtype: Any, seed: int) -> Callable[[Callable[[], Any], int], Any]:
    """``build(factory, offset)``: ``factory()``'s model made without memory, filled with random weights on
    ``device`` (fast on a GPU) from ``seed + offset``, and returned on the CPU in eval mode."""
    import torch
    from accelerate import init_empty_weights

    from invokeai_provider.models.testing.tiny import fill_random_weights

    def build(factory: Callable[[], Any], offset: int) -> Any:
        with init_empty_weights(include_buffers=False):
            model = factory()
        fill_random_weights(model, torch.Generator(device=device).manual_seed(seed + offset), device=device,
                            dtype=dtype)
        return model.to("cpu").eval()

    return build


def save_pipeline(pipeline: Any, dest: Path) -> None:
    """Save as a diffusers folder; written beside ``dest`` first, so a killed build leaves no folder to reuse."""
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging, safe_serialization=True)
    staging.rename(dest)


def edge(source: str, field: str, destination: str, destination_field: str = "") -> dict[str, Any]:
    return {"source": {"node_id": source, "field": field},
            "destination": {"node_id": destination, "field": destination_field or field}}


def graph_doc(graph_id: str, nodes: dict[str, dict[str, Any]], edges: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": graph_id, "nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": edges}


# ---------------------------------------------------------------------------------------------------------------------
# The two paths
# ---------------------------------------------------------------------------------------------------------------------


def model_folder(family: Family, mode: str, root: Path, *, device: str, dtype: Any) -> tuple[Path, float, bool]:
    """(folder, seconds to build, reused); a folder already in ``root`` is reused."""
    slug = family.slug
    dest = root / (f"{mode}-{slug}" if mode == family.cpu_mode else f"{mode}-{slug}-{str(dtype).removeprefix('torch.')}")
    if (dest / "model_index.json").is_file():
        return dest, 0.0, True
    started = time.perf_counter()
    if mode == family.cpu_mode:
        family.build_tiny(dest)
    else:
        family.build_full(dest, device=device, dtype=dtype)
        gc.collect()
    return dest, time.perf_counter() - started, False


class EnginePath:
    """Our engine, one ModelManager (warm cache); a batch of N sessions in one engine call."""

    def __init__(self, family: Family, folder: Path, work: Path, *, device: str, dtype: Any, size: int,
                 steps: int) -> None:
        from invokeai_provider.graph.graph import Graph
        from invokeai_provider.models.model_manager.binding import bind_model_fields
        from invokeai_provider.models.model_manager.install import install_model
        from invokeai_provider.models.model_manager.manager import ModelManager
        from invokeai_provider.models.model_manager.registry import ModelRegistry
        from invokeai_provider.storage.base import LocalArtifactBackend

        self.dag_id = family.script
        self.registry = ModelRegistry((work / f"registry-{family.slug}").as_uri())
        name = f"bench-{family.slug}"
        install_model(self.registry, str(folder), name=name, inplace=True)
        self.manager = ModelManager(self.registry, device=device, dtype=dtype)
        self.graph = Graph.from_dict(bind_model_fields(family.graph(name, size=size, steps=steps), self.registry))
        self.backend = LocalArtifactBackend(work / f"artifacts-{family.slug}")
        self.runs = 0

    def sessions(self, seeds: list[int]) -> list[dict[str, Any]]:
        from invokeai_provider.graph.batch import Batch, BatchDatum, expand_batch

        batch = Batch(data=[[BatchDatum(node_path="denoise", field_name="seed", items=list(seeds))]])
        graphs, _ = expand_batch(self.graph, batch)
        return [g.to_dict() for g in graphs]

    def run(self, sessions: list[dict[str, Any]]) -> None:
        from invokeai_provider.execution.graph_runs import GraphJob, TaskEnvironment, run_graphs

        self.runs += 1
        jobs = [GraphJob(doc, TaskEnvironment(dag_id=self.dag_id, run_id=f"batch-{self.runs}", task_id="t2i",
                                              item=index, artifact_root=self.backend.uri("")), persist=["decode"])
                for index, doc in enumerate(sessions)]
        run_graphs(jobs, {"models": self.manager}, workflow_json=None)


class DiffusersPath:
    """The family's diffusers pipeline from the folder; a batch of N is one call with ``num_images_per_prompt=N``.
    A family names its ``pipeline`` class and gives its own arguments in ``call_kwargs`` (and may adjust the loaded
    pipeline in ``prepare``)."""

    pipeline = ""  # diffusers' class name

    def __init__(self, folder: Path, *, device: str, dtype: Any, size: int, steps: int) -> None:
        import diffusers

        self.size, self.steps = size, steps
        self.pipe = getattr(diffusers, self.pipeline).from_pretrained(folder, torch_dtype=dtype,
                                                                      local_files_only=True).to(device)
        self.prepare()
        self.pipe.set_progress_bar_config(disable=True)

    def prepare(self) -> None:
        """Make the loaded pipeline run InvokeAI's schedule where its own default differs."""

    def call_kwargs(self) -> dict[str, Any]:
        """The prompt, guidance and family-specific arguments of the pipeline call."""
        raise NotImplementedError

    def run(self, batch: int, seed: int) -> None:
        import torch

        images = self.pipe(num_inference_steps=self.steps, height=self.size, width=self.size,
                           num_images_per_prompt=batch, generator=torch.Generator(device="cpu").manual_seed(seed),
                           output_type="pil", **self.call_kwargs()).images
        assert len(images) == batch


# ---------------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------------


def peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.startswith("cuda") else float("nan")


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)


def bench(family: Family, args: argparse.Namespace, work: Path, *, device: str, dtype: Any, size: int, steps: int
          ) -> tuple[list[Row], list[str]]:
    """The two paths in one process. Each path is timed alone on the device (the other's models are freed
    between), so its peak memory is its own; within a path, batches are interleaved with repeats."""
    timed = make_timer(device)
    folder, built_s, reused = model_folder(family, args.mode, work, device=device, dtype=dtype)
    notes = [f"model {'reused' if reused else f'built in {built_s:.0f} s'} at {folder}"]
    rows = {batch: Row(family.label, batch) for batch in args.batches}
    for path_name in ("engine", "diffusers"):
        started = time.perf_counter()
        if path_name == "engine":
            shutil.rmtree(work / f"registry-{family.slug}", ignore_errors=True)
            path: Any = EnginePath(family, folder, work, device=device, dtype=dtype, size=size, steps=steps)
            first = timed(functools.partial(path.run, path.sessions([0])))
        else:
            path = family.diffusers(folder, device=device, dtype=dtype, size=size, steps=steps)
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


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(family: Family) -> argparse.Namespace:
    cpu = family.cpu_mode
    (_, gpu_steps, gpu_repeats), (_, cpu_steps, cpu_repeats) = family.modes["gpu"], family.modes[cpu]
    parser = argparse.ArgumentParser(description=family.description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=tuple(family.modes), default=None,
                        help=f"gpu (default with CUDA): full-size random bf16 {family.architecture}; {cpu}: the tiny "
                             "model")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed repeats per batch: {gpu_repeats} gpu, {cpu_repeats} cpu")
    parser.add_argument("--batches", default="1", help="comma-separated batch sizes (default 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"override the mode's steps ({gpu_steps} gpu, {cpu_steps} {cpu})")
    parser.add_argument("--size", type=int, default=None,
                        help=f"override the mode's size (multiple of {family.size_multiple})")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the built model here and reuse it")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not args.batches or min(args.batches) < 1:
        parser.error("--batches needs positive integers")
    if args.size is not None and args.size % family.size_multiple:
        parser.error(f"--size must be a multiple of {family.size_multiple}")
    return args


def main(family: Family) -> None:
    bench_sd.check_packages()
    bench_sd.quiet_libraries()
    args = parse_args(family)
    import torch

    from invokeai_provider.core.registry import load_node_packs

    args.mode = args.mode or ("gpu" if torch.cuda.is_available() else family.cpu_mode)
    if args.mode == "gpu" and not torch.cuda.is_available():
        sys.exit(f"{family.script}: --mode gpu needs CUDA, and torch.cuda.is_available() is False here")
    device = "cuda" if args.mode == "gpu" else "cpu"
    size, steps, repeats = family.modes[args.mode]
    size, steps, args.repeats = args.size or size, args.steps or steps, args.repeats or repeats
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # bfloat16, as InvokeAI runs these families
    if device == "cpu":
        torch.set_num_threads(bench_sd.cpu_cores())
    load_node_packs()
    print(f"{family.script}  mode={args.mode}  device={device}  dtype={str(dtype).removeprefix('torch.')}  "
          f"{size}x{size}, {steps} steps, {family.settings}; median of {args.repeats} timed runs per batch")
    if device == "cuda":
        print(f"  GPU: {torch.cuda.get_device_name(device)}")
    work_context = (contextlib.nullcontext(str(args.workdir)) if args.workdir
                    else tempfile.TemporaryDirectory(prefix=f"bench-{family.slug}-"))
    started = time.perf_counter()
    with work_context as work_name:
        work = Path(work_name)
        work.mkdir(parents=True, exist_ok=True)
        rows, notes = bench(family, args, work, device=device, dtype=dtype, size=size, steps=steps)
    print()
    print("median seconds per image and images/s; engine/diffusers = engine img/s / diffusers img/s (target >= 0.95x)")
    print_table(rows)
    for note in notes:
        print(f"  {note}")
    print(f"  total wall time {time.perf_counter() - started:.0f} s")
    print(f"  median engine/diffusers at batch {rows[0].batch}: "
          f"{statistics.median(rows[0].diffusers) / statistics.median(rows[0].engine):.2f}x")
