"""The ``invokeai-airflow`` command line: the parser (each command group adds its own subcommands) and the entry
point. Command modules import their heavy dependencies inside the command, so the CLI starts fast."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from invokeai_provider.cli import cluster
from invokeai_provider.cli import compile as compile_command
from invokeai_provider.cli import demo, graph, images, models, nodes, runtime, usage
from invokeai_provider.errors import InvokeAIProviderError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="invokeai-airflow", description="InvokeAI node graphs on Apache Airflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (nodes, graph, demo, compile_command, cluster, usage, runtime, models, images):
        group.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InvokeAIProviderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 1
