"""Text-to-image throughput: our engine's InvokeAI graph against plain diffusers pipelines, in one run.

    .venv/bin/python benchmarks/bench_sd.py                      # --mode gpu when CUDA is available
    .venv/bin/python benchmarks/bench_sd.py --mode cpu-smoke --repeats 2

Modes:
- ``gpu``: full-size SD1.5 (512x512, 30 steps) and SDXL (1024x1024, 30 steps) architectures with RANDOM fp16
  weights, built from the public configs in ``invokeai_provider.models.stable_diffusion.arch_configs`` (no model hub), saved as
  diffusers folders with the real CLIP tokenizer. Random weights time exactly like real ones (same shapes, same
  kernels); the images are noise.
- ``cpu-smoke``: the tiny models of ``invokeai_provider.models.testing.tiny`` at 64x64 and 4 steps: shows that the script
  works and measures the per-image overhead of each path on CPU. These figures are not the GPU target.

Both paths use the same folders, dtype, device, prompt, size, steps, guidance (7.5) and scheduler ("euler" ->
EulerDiscreteScheduler from the model's scheduler config; the script checks that both build the same timesteps).

- engine: the InvokeAI text-to-image graph (model loader -> 2 prompts -> noise -> denoise_latents -> l2i) with one
  ``ModelManager`` (warm model cache). Batch N is an ``invokeai_provider.graph.batch.Batch`` over ``noise.seed``
  expanded to N sessions (graphs), run as a chunk of a mapped task runs them: one engine call
  (``invokeai_provider.execution.graph_runs.run_graphs``) whose sessions share the node cache (the prompts are
  encoded once), keep their tensors in memory and denoise as one batch. Each session's image is a PNG in a local
  artifact store (the PNG encoding time is also measured on its own).
- diffusers: ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` from the same folder, one call with
  ``num_images_per_prompt=N``, ``output_type="pil"``.

Timings exclude the first load (each (path, batch) pair runs once untimed first), synchronise CUDA around every
sample, interleave the two paths (ABBA order, since the machines are shared) and report medians.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# import name -> what to install
REQUIRED_PACKAGES = {
    "torch": "torch",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "accelerate": "accelerate",
    "safetensors": "safetensors",
    "compel": "compel",
    "blake3": "blake3",
    "PIL": "pillow",
    "invokeai_provider": "airflow-provider-invokeai (pip install -e . in the repository)",
}

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
CFG_SCALE = 7.5
SCHEDULER = "euler"

# The public architecture configs (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-xl-base-1.0) live in
# invokeai_provider.models.stable_diffusion.arch_configs, which also converts single-file checkpoints with them; the parameter counts
# of the public models are checked after construction. (model, part) -> key of arch_configs.PUBLIC_PARAMS:
PARAM_KEYS = {
    ("sd15", "unet"): "sd15_unet",
    ("sd15", "vae"): "vae",
    ("sd15", "text_encoder"): "clip_l",
    ("sdxl", "unet"): "sdxl_unet",
    ("sdxl", "vae"): "vae",
    ("sdxl", "text_encoder"): "clip_l",
    ("sdxl", "text_encoder_2"): "openclip_bigg",
}


@dataclass(frozen=True)
class ModelSpec:
    key: str  # sd15 | sdxl
    tiny_base: str  # base name of invokeai_provider.models.testing.tiny
    pipeline: str  # diffusers pipeline class
    label: str


SPECS = {
    "sd15": ModelSpec("sd15", "sd-1", "StableDiffusionPipeline", "SD1.5"),
    "sdxl": ModelSpec("sdxl", "sdxl", "StableDiffusionXLPipeline", "SDXL"),
}

MODE_DEFAULTS = {  # mode -> (size per model, steps, repeats)
    "gpu": ({"sd15": 512, "sdxl": 1024}, 30, 5),
    "cpu-smoke": ({"sd15": 64, "sdxl": 64}, 4, 3),
}


# ---------------------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------------------


def check_packages() -> None:
    missing = [(name, pip) for name, pip in REQUIRED_PACKAGES.items() if importlib.util.find_spec(name) is None]
    if missing:
        lines = "\n".join(f"  {name:<18} install: {pip}" for name, pip in missing)
        sys.exit(f"bench_sd: missing Python package(s) for {sys.executable}:\n{lines}")


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*invalid value encountered in cast.*")  # noise images of random fp16
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------------------------
# Full-size random-weight models
# ---------------------------------------------------------------------------------------------------------------------


def _construct(factory: Callable[[], Any], spec_key: str, part: str, device: str, dtype: Any, seed: int) -> Any:
    from accelerate import init_empty_weights
    from invokeai_provider.models.stable_diffusion.arch_configs import PUBLIC_PARAMS

    with init_empty_weights(include_buffers=False):
        model = factory()
    count = sum(p.numel() for p in model.parameters())
    expected = PUBLIC_PARAMS[PARAM_KEYS[(spec_key, part)]]
    if count != expected:
        raise SystemExit(f"bench_sd: {spec_key} {part} has {count:,} parameters, the public model {expected:,}: "
                         "the config in invokeai_provider.models.stable_diffusion.arch_configs is wrong")
    import torch

    from invokeai_provider.models.testing.tiny import fill_random_weights

    fill_random_weights(model, torch.Generator(device=device).manual_seed(seed), device=device, dtype=dtype)
    return model.to("cpu").eval()


def build_full_model(spec: ModelSpec, dest: Path, *, device: str, dtype: Any, seed: int = 0) -> Path:
    """A diffusers folder of the full-size architecture with random weights in ``dtype`` and the real CLIP tokenizer."""
    import diffusers
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        PNDMScheduler,
        UNet2DConditionModel,
    )
    from invokeai_provider.models.stable_diffusion.arch_configs import (
        CLIP_L,
        EULER_SCHEDULER,
        OPENCLIP_BIGG,
        PNDM_SCHEDULER,
        SD15_UNET,
        SD15_VAE,
        SDXL_UNET,
        SDXL_VAE,
    )
    from invokeai_provider.models.testing.tiny import clip_tokenizer, clip_tokenizer_files
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    # force_upcast=False: as the fp16-fix SDXL VAE that fp16 users run. The real SDXL VAE config says True, which makes
    # diffusers decode in fp32 while our l2i (like InvokeAI's, fp32=False) decodes in the model dtype: not comparable.
    sdxl_vae = {**SDXL_VAE, "force_upcast": False}

    sdxl = spec.key == "sdxl"
    def build(factory: Callable[[], Any], part: str, offset: int) -> Any:
        return _construct(factory, spec.key, part, device, dtype, seed + offset)

    components: dict[str, Any] = {
        "unet": build(lambda: UNet2DConditionModel(**(SDXL_UNET if sdxl else SD15_UNET)), "unet", 0),
        "vae": build(lambda: AutoencoderKL(**(sdxl_vae if sdxl else SD15_VAE)), "vae", 1),
        "text_encoder": build(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L)), "text_encoder", 2),
        "tokenizer": clip_tokenizer("<|endoftext|>"),
    }
    if sdxl:
        components["text_encoder_2"] = build(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**OPENCLIP_BIGG)),
                                             "text_encoder_2", 3)
        components["tokenizer_2"] = clip_tokenizer("!")  # SDXL's second tokenizer pads with "!"
        components["scheduler"] = EulerDiscreteScheduler(**EULER_SCHEDULER)
        extra: dict[str, Any] = dict(add_watermarker=False, force_zeros_for_empty_prompt=True)
    else:
        components["scheduler"] = PNDMScheduler(**PNDM_SCHEDULER)
        extra = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline = getattr(diffusers, spec.pipeline)(**components, **extra)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging, safe_serialization=True)
    vocab = clip_tokenizer_files()
    for tokenizer_dir in staging.glob("tokenizer*"):  # vocab.json/merges.txt beside tokenizer.json, as hub repos
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(vocab / name, tokenizer_dir / name)
    staging.rename(dest)
    del pipeline, components
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return dest


def model_folder(spec: ModelSpec, mode: str, root: Path, *, device: str, dtype: Any) -> tuple[Path, float, bool]:
    """(folder, seconds to build, reused) for one model; a folder already in ``root`` is reused."""
    dest = root / (f"{mode}-{spec.key}" if mode == "cpu-smoke" else f"{mode}-{spec.key}-{str(dtype).removeprefix('torch.')}")
    if (dest / "model_index.json").is_file():
        return dest, 0.0, True
    started = time.perf_counter()
    if mode == "cpu-smoke":
        from invokeai_provider.models.testing.tiny import build_sd_model

        build_sd_model(spec.tiny_base, dest)  # type: ignore[arg-type]
    else:
        build_full_model(spec, dest, device=device, dtype=dtype)
    return dest, time.perf_counter() - started, False


# ---------------------------------------------------------------------------------------------------------------------
# The two paths
# ---------------------------------------------------------------------------------------------------------------------


def _edge(source: str, source_field: str, destination: str, destination_field: str) -> dict[str, Any]:
    return {"source": {"node_id": source, "field": source_field},
            "destination": {"node_id": destination, "field": destination_field}}


def t2i_graph(spec: ModelSpec, model: str, *, size: int, steps: int, seed: int) -> dict[str, Any]:
    """InvokeAI's text-to-image graph for SD1.x or SDXL (as in tests/operators/sd/test_sd_nodes.py)."""
    denoise = {"type": "denoise_latents", "steps": steps, "cfg_scale": CFG_SCALE, "scheduler": SCHEDULER}
    if spec.key == "sdxl":
        dims = dict(original_width=size, original_height=size, target_width=size, target_height=size)
        nodes: dict[str, dict[str, Any]] = {
            "model": {"type": "sdxl_model_loader", "model": model},
            "pos": {"type": "sdxl_compel_prompt", "prompt": PROMPT, "style": "", **dims},
            "neg": {"type": "sdxl_compel_prompt", "prompt": "", "style": "", **dims},
        }
        clip_edges = [_edge("model", "clip", "pos", "clip"), _edge("model", "clip2", "pos", "clip2"),
                      _edge("model", "clip", "neg", "clip"), _edge("model", "clip2", "neg", "clip2")]
    else:
        nodes = {
            "model": {"type": "main_model_loader", "model": model},
            "pos": {"type": "compel", "prompt": PROMPT},
            "neg": {"type": "compel", "prompt": ""},
        }
        clip_edges = [_edge("model", "clip", "pos", "clip"), _edge("model", "clip", "neg", "clip")]
    nodes |= {
        "noise": {"type": "noise", "seed": seed, "width": size, "height": size},
        "denoise": denoise,
        "decode": {"type": "l2i"},
    }
    edges = [*clip_edges,
             _edge("model", "unet", "denoise", "unet"), _edge("pos", "conditioning", "denoise", "positive_conditioning"),
             _edge("neg", "conditioning", "denoise", "negative_conditioning"), _edge("noise", "noise", "denoise", "noise"),
             _edge("denoise", "latents", "decode", "latents"), _edge("model", "vae", "decode", "vae")]
    return {"id": f"t2i-{spec.key}", "nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": edges}


class EnginePath:
    """Our engine: one ModelManager (its cache stays warm), one session per image as InvokeAI runs a batch."""

    def __init__(self, spec: ModelSpec, folder: Path, work: Path, *, device: str, dtype: Any, size: int,
                 steps: int) -> None:
        from invokeai_provider.graph.graph import Graph
        from invokeai_provider.models.model_manager.binding import bind_model_fields
        from invokeai_provider.models.model_manager.install import install_model
        from invokeai_provider.models.model_manager.manager import ModelManager
        from invokeai_provider.models.model_manager.registry import ModelRegistry
        from invokeai_provider.storage.base import LocalArtifactBackend

        self.registry = ModelRegistry((work / f"registry-{spec.key}").as_uri())
        name = f"bench-{spec.key}"
        install_model(self.registry, str(folder), name=name, inplace=True)
        self.manager = ModelManager(self.registry, device=device, dtype=dtype)
        self.graph = Graph.from_dict(bind_model_fields(t2i_graph(spec, name, size=size, steps=steps, seed=0),
                                                       self.registry))
        self.backend = LocalArtifactBackend(work / f"artifacts-{spec.key}")
        self.runs = 0
        self.last_png: bytes | None = None

    def sessions(self, seeds: list[int]) -> list[dict[str, Any]]:
        """The batch's session graphs (enqueue time in InvokeAI, so not timed)."""
        from invokeai_provider.graph.batch import Batch, BatchDatum, expand_batch

        batch = Batch(data=[[BatchDatum(node_path="noise", field_name="seed", items=list(seeds))]])
        graphs, _ = expand_batch(self.graph, batch)
        return [g.to_dict() for g in graphs]

    def run(self, sessions: list[dict[str, Any]]) -> None:
        """A batch's sessions as a mapped task runs them: a chunk of ``[invokeai] map_chunk_size`` sessions per
        engine call (shared node cache, intermediates in memory, denoise nodes batched)."""
        from invokeai_provider.config import settings
        from invokeai_provider.execution.chunks import chunk_ranges
        from invokeai_provider.execution.graph_runs import GraphJob, TaskEnvironment, run_graphs
        from invokeai_provider.storage.base import RunStore

        self.runs += 1
        run_id = f"batch-{self.runs}"
        jobs = [GraphJob(doc, TaskEnvironment(dag_id="bench_sd", run_id=run_id, task_id="t2i", item=index,
                                              artifact_root=self.backend.uri("")), persist=["decode"])
                for index, doc in enumerate(sessions)]
        for first, last in chunk_ranges(len(jobs), settings("map_chunk_size").map_chunk_size):
            states = run_graphs(jobs[first:last + 1], {"models": self.manager}, workflow_json=None)
        [image] = states[-1].outputs_of("decode")
        self.last_png = RunStore(self.backend, dag_id="bench_sd", run_id=run_id).read("images", image.image.image_name)

    def engine_scheduler(self, folder: Path) -> Any:
        from invokeai_provider.models.stable_diffusion.schedulers import make_scheduler

        return make_scheduler(SCHEDULER, json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))


class DiffusersPath:
    def __init__(self, spec: ModelSpec, folder: Path, *, device: str, dtype: Any, size: int, steps: int) -> None:
        import diffusers
        from diffusers import EulerDiscreteScheduler

        extra: dict[str, Any] = {"add_watermarker": False} if spec.key == "sdxl" else {
            "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        self.pipe = getattr(diffusers, spec.pipeline).from_pretrained(folder, torch_dtype=dtype, local_files_only=True,
                                                                      **extra).to(device)
        self.pipe.scheduler = EulerDiscreteScheduler.from_config(self.pipe.scheduler.config)
        self.pipe.set_progress_bar_config(disable=True)
        self.size, self.steps = size, steps

    def run(self, batch: int, seed: int) -> None:
        import torch

        # negative_prompt=None: SD1 encodes "" for it, SDXL uses zeros (force_zeros_for_empty_prompt), as the engine
        images = self.pipe(PROMPT, negative_prompt=None, num_inference_steps=self.steps, guidance_scale=CFG_SCALE,
                           height=self.size, width=self.size, num_images_per_prompt=batch,
                           generator=torch.Generator(device="cpu").manual_seed(seed), output_type="pil").images
        assert len(images) == batch


def same_schedule(engine_scheduler: Any, diffusers_scheduler: Any, steps: int) -> str:
    import torch

    if type(engine_scheduler) is not type(diffusers_scheduler):
        return f"DIFFERENT classes ({type(engine_scheduler).__name__} vs {type(diffusers_scheduler).__name__})"
    engine_scheduler.set_timesteps(steps, device="cpu")
    diffusers_scheduler.set_timesteps(steps, device="cpu")
    same = (torch.equal(engine_scheduler.timesteps, diffusers_scheduler.timesteps)
            and torch.allclose(engine_scheduler.sigmas, diffusers_scheduler.sigmas))
    return f"{type(engine_scheduler).__name__} on both, timesteps and sigmas {'identical' if same else 'DIFFER'}"


# ---------------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    model: str
    batch: int
    engine: list[float] = field(default_factory=list)  # seconds per batch
    diffusers: list[float] = field(default_factory=list)

    def per_image(self, samples: list[float]) -> float:
        return statistics.median(samples) / self.batch


def make_timer(device: str) -> Callable[[Callable[[], Any]], float]:
    import torch

    cuda = device.startswith("cuda")

    def timed(fn: Callable[[], Any]) -> float:
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started

    return timed


def png_encode_seconds(png: bytes, repeats: int) -> float:
    """Median time to encode the engine's image again as it does (PNG, compress_level=1, empty text chunks)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    image = Image.open(io.BytesIO(png)).convert("RGB")
    samples = []
    for _ in range(max(repeats, 3)):
        buffer = io.BytesIO()
        started = time.perf_counter()
        image.save(buffer, format="PNG", pnginfo=PngInfo(), compress_level=1)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def bench_model(spec: ModelSpec, args: argparse.Namespace, work: Path, *, device: str, dtype: Any, size: int,
                steps: int) -> tuple[list[Row], list[str]]:
    timed = make_timer(device)
    notes: list[str] = []
    folder, built_s, reused = model_folder(spec, args.mode, work, device=device, dtype=dtype)
    for stale in (work / f"registry-{spec.key}", work / f"artifacts-{spec.key}"):
        shutil.rmtree(stale, ignore_errors=True)
    engine = EnginePath(spec, folder, work, device=device, dtype=dtype, size=size, steps=steps)
    started = time.perf_counter()
    diffusers = DiffusersPath(spec, folder, device=device, dtype=dtype, size=size, steps=steps)
    diffusers_load = time.perf_counter() - started
    notes.append(f"scheduler: {same_schedule(engine.engine_scheduler(folder), diffusers.pipe.scheduler, steps)}")

    # first runs: load everything (excluded from the figures)
    first_engine = timed(functools.partial(engine.run, engine.sessions([0])))
    first_diffusers = timed(functools.partial(diffusers.run, 1, 0))
    loads_before = engine.manager.cache.stats.misses
    build = "reused" if reused else f"built in {built_s:.1f} s"
    notes.append(f"model {build}; untimed first run: engine {first_engine:.2f} s (loads the models into its cache), "
                 f"diffusers {diffusers_load:.2f} s from_pretrained + {first_diffusers:.2f} s first call")

    rows = []
    for batch in args.batches:
        row = Row(spec.label, batch)
        seeds = [1000 * batch + i for i in range(batch * (args.repeats + 1))]
        sessions = [engine.sessions(seeds[i * batch:(i + 1) * batch]) for i in range(args.repeats + 1)]
        if batch != 1:  # warm-up at this batch size (batch 1 was warmed by the first runs)
            engine.run(sessions[-1])
            diffusers.run(batch, seeds[-1])
        for r in range(args.repeats):
            first, second = (("engine", "diffusers") if r % 2 == 0 else ("diffusers", "engine"))
            for path in (first, second):
                if path == "engine":
                    row.engine.append(timed(functools.partial(engine.run, sessions[r])))
                else:
                    row.diffusers.append(timed(functools.partial(diffusers.run, batch, seeds[r * batch])))
        rows.append(row)
        print(f"  {spec.label} batch {batch}: engine {fmt_samples(row.engine)}  diffusers {fmt_samples(row.diffusers)}",
              flush=True)
    loads = engine.manager.cache.stats.misses - loads_before
    if loads:
        notes.append(f"WARNING: the engine's model cache loaded {loads} model(s) during timed runs (cache too small?)")
    if engine.last_png is not None:
        notes.append(f"PNG encoding on the engine side (included in its figures): "
                     f"{png_encode_seconds(engine.last_png, args.repeats) * 1000:.1f} ms/image at {size}x{size}")
    return rows, notes  # the models are freed in main() once engine and diffusers are out of scope


def fmt_samples(samples: list[float]) -> str:
    return "[" + " ".join(f"{s:.3f}" for s in samples) + "] s"


def print_table(rows: list[Row]) -> None:
    header = (f"{'model':<6} {'batch':>5}  {'engine s/img':>12} {'img/s':>8}  {'diffusers s/img':>15} {'img/s':>8}"
              f"  {'engine/diffusers':>16}  {'extra ms/img':>12}")
    print(header)
    print("-" * len(header))
    for row in rows:
        engine, diffusers = row.per_image(row.engine), row.per_image(row.diffusers)
        print(f"{row.model:<6} {row.batch:>5}  {engine:>12.4f} {1 / engine:>8.2f}  {diffusers:>15.4f} "
              f"{1 / diffusers:>8.2f}  {diffusers / engine:>15.2f}x  {(engine - diffusers) * 1000:>+12.1f}")


# ---------------------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("gpu", "cpu-smoke"), default=None,
                        help="gpu (default with CUDA): full-size random fp16 SD1.5/SDXL; cpu-smoke (default without): "
                             "tiny models")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per (model, batch): 5 gpu, 3 cpu")
    parser.add_argument("--models", default="sd15,sdxl", help="comma-separated subset of: sd15, sdxl")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--steps", type=int, default=None, help="override the mode's steps (30 gpu, 4 cpu-smoke)")
    parser.add_argument("--size", type=int, default=None, help="override the mode's image size (multiple of 8)")
    parser.add_argument("--device", default=None, help="override the device (cuda, cuda:1, cpu) for debugging")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default=None,
                        help="override the dtype (default: float16 on CUDA, float32 on CPU) for debugging")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep built models here and reuse them on the next run (default: a temporary folder)")
    args = parser.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in SPECS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; expected a subset of {list(SPECS)}")
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not args.batches or min(args.batches) < 1:
        parser.error("--batches needs positive integers")
    if args.size is not None and args.size % 8:
        parser.error("--size must be a multiple of 8")
    return args


def main() -> None:
    check_packages()
    quiet_libraries()
    args = parse_args()
    import diffusers
    import torch
    import transformers
    from invokeai_provider.core.registry import load_node_packs

    cuda = torch.cuda.is_available()
    args.mode = args.mode or ("gpu" if cuda else "cpu-smoke")
    device = args.device or ("cuda" if args.mode == "gpu" else "cpu")
    if device.startswith("cuda") and not cuda:
        sys.exit("bench_sd: --mode gpu needs CUDA, and torch.cuda.is_available() is False here; "
                 "use --mode cpu-smoke (or --device cpu to run the full-size models on the CPU, slowly)")
    sizes, steps, repeats = MODE_DEFAULTS[args.mode]
    steps = args.steps or steps
    args.repeats = args.repeats or repeats
    dtype = getattr(torch, args.dtype) if args.dtype else torch.float16 if device.startswith("cuda") else torch.float32
    if device == "cpu":
        torch.set_num_threads(cpu_cores())
    load_node_packs()

    print(f"bench_sd  mode={args.mode}  device={device}  dtype={str(dtype).removeprefix('torch.')}  "
          f"torch {torch.__version__}  diffusers {diffusers.__version__}  transformers {transformers.__version__}")
    if device.startswith("cuda"):
        print(f"  GPU: {torch.cuda.get_device_name(device)}")
    else:
        print(f"  CPU: torch.set_num_threads({torch.get_num_threads()})")
    if args.mode == "cpu-smoke":
        print("  CPU SMOKE TEST: tiny random models, not the GPU target; shows the script works and measures "
              "per-image overhead")
    else:
        print(f"  full-size SD1.5/SDXL architectures with RANDOM {str(dtype).removeprefix('torch.')} weights (same compute "
              "as real weights; the images are noise)")
    size_text = ", ".join(f"{SPECS[m].label} {args.size or sizes[m]}px" for m in args.models)
    print(f"  {size_text}; {steps} steps; scheduler {SCHEDULER}; cfg {CFG_SCALE}; median of {args.repeats} timed "
          f"runs per cell after one untimed warm-up per (path, batch); first load excluded")
    print("  engine batch N = an InvokeAI Batch over noise.seed -> N sessions in one engine call (one ModelManager, "
          "warm cache, shared node cache, denoised as one batch), each saving a PNG; diffusers batch N = one pipeline "
          "call, num_images_per_prompt=N, output_type='pil'", flush=True)

    work_context = (contextlib.nullcontext(str(args.workdir)) if args.workdir
                    else tempfile.TemporaryDirectory(prefix="bench-sd-"))
    rows: list[Row] = []
    notes: list[str] = []
    started = time.perf_counter()
    with work_context as work_name:
        work = Path(work_name)
        work.mkdir(parents=True, exist_ok=True)
        for key in args.models:
            spec = SPECS[key]
            model_rows, model_notes = bench_model(spec, args, work, device=device, dtype=dtype,
                                                  size=args.size or sizes[key], steps=steps)
            rows += model_rows
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            notes += [f"{spec.label}: {n}" for n in model_notes]
            if args.workdir:  # keep the models, not the per-run registries and artifacts
                for leftover in work.glob(f"*-{key}"):
                    if leftover.name.startswith(("registry-", "artifacts-")):
                        shutil.rmtree(leftover, ignore_errors=True)
    print()
    print("median seconds per image and images/s; engine/diffusers = engine img/s / diffusers img/s (1.00x = parity); "
          "extra ms/img = engine s/img - diffusers s/img")
    print_table(rows)
    for note in notes:
        print(f"  {note}")
    print(f"  total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
