"""``invokeai-airflow runtime serve|status|preload``: the per-GPU runtime that keeps models warm across tasks."""

from __future__ import annotations

import argparse
import json
import logging

from invokeai_provider.errors import InvokeAIProviderError


def _runtime_socket(args: argparse.Namespace) -> str:
    from invokeai_provider.config import settings

    path = args.socket or settings().runtime_socket
    if not path:
        raise InvokeAIProviderError("runtime: give --socket PATH or set [invokeai] runtime_socket")
    return path


def cmd_runtime(args: argparse.Namespace) -> int:
    """The per-GPU runtime: serve it, ask it for its status, or have it preload models."""
    from invokeai_provider.config import settings
    from invokeai_provider.execution.runtime.client import RuntimeClient

    socket_path = _runtime_socket(args)
    model_root = args.model_root or settings().configured_model_root  # None: the runtime's own default
    if args.action == "serve":
        from invokeai_provider.execution.runtime.server import RuntimeServer

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        preload = list(args.preload or []) or list(settings().runtime_preload)
        RuntimeServer(socket_path, args.device, preload=preload, model_root=model_root,
                      ram_cache_gb=args.ram_cache_gb, vram_cache_gb=args.vram_cache_gb,
                      max_batch=args.max_batch).serve_forever()
        return 0
    client = RuntimeClient(socket_path)
    if args.action == "preload":
        if not args.models:
            raise InvokeAIProviderError("runtime preload: name at least one model (name or key)")
        answer = client.preload(list(args.models), model_root)
        print(json.dumps(answer, indent=2) if args.json else
              f"warm: {len(answer['keys'])} model parts; {answer['cache']['misses']} loaded in "
              f"{answer['cache']['load_seconds']:.2f} s, {answer['cache']['hits']} already warm")
        return 0
    report = client.status()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"runtime pid {report['pid']} on {report['device']} ({report['socket']}), up {report['uptime_seconds']} s: "
          f"{'busy' if report['busy'] else 'idle'}, {report['queued']} queued; jobs run {report['jobs_run']}, "
          f"failed {report['jobs_failed']}, canceled {report['jobs_canceled']}")
    batches = report["denoise_batches"]
    print(f"denoise batches (at most {report['max_batch']}): {batches['batches']} for {batches['items']} denoise nodes, "
          f"largest {batches['largest']}")
    for root, cache in report["model_caches"].items():
        print(f"model cache ({root}): {cache['hits']} hits, {cache['misses']} misses, {cache['load_seconds']:.2f} s "
              f"loading, {cache['evictions']} evictions; warm: {', '.join(cache['models']) or 'nothing'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``runtime``."""
    runtime = sub.add_parser("runtime", help="the per-GPU runtime that keeps models warm across tasks")
    runtime.add_argument("action", choices=("serve", "status", "preload"),
                         help="serve a device on a socket (runs until SIGTERM), report a running runtime's model "
                              "cache and jobs, or load models into it")
    runtime.add_argument("models", nargs="*", help="with preload: model names or keys")
    runtime.add_argument("--socket", help="Unix socket path (default: [invokeai] runtime_socket)")
    runtime.add_argument("--device", default="cpu", help="with serve: cuda:N or cpu (default: cpu)")
    runtime.add_argument("--preload", action="append", metavar="MODEL",
                         help="with serve: a model name or key to load at start (repeatable; default: "
                              "[invokeai] runtime_preload)")
    runtime.add_argument("--model-root", metavar="URI", help="model root (default: [invokeai] model_root)")
    runtime.add_argument("--ram-cache-gb", type=float, help="with serve: RAM budget (default: [invokeai] ram_cache_gb)")
    runtime.add_argument("--vram-cache-gb", type=float,
                         help="with serve: VRAM budget (default: [invokeai] vram_cache_gb; 0 = what the device has)")
    runtime.add_argument("--max-batch", type=int, metavar="N",
                         help="with serve: most denoise nodes of one DAG run denoised as one batch, and tasks admitted at "
                              "a time (default: [invokeai] runtime_max_batch; 1 = one task after the other)")
    runtime.add_argument("--json", action="store_true", help="with status and preload: print JSON")
    runtime.set_defaults(func=cmd_runtime)
