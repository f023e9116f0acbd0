"""``invokeai-airflow compile``: a readable Airflow DAG file for a graph or workflow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_compile(args: argparse.Namespace) -> int:
    from invokeai_provider.compiler.dags import dag_id_for
    from invokeai_provider.compiler.render import render_dag_file

    source = Path(args.file)
    dag_id = args.dag_id or dag_id_for(source)
    text = render_dag_file(source, dag_id=dag_id, granularity=args.granularity, source_name=source.name,
                           chunk_size=args.chunk_size)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}: DAG {dag_id!r}", file=sys.stderr)
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def add_chunk_size_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--chunk-size N``: batch sessions or iteration items that run in one engine call."""
    parser.add_argument("--chunk-size", type=_positive, metavar="N",
                        help=f"batch sessions or iteration items {what} (default: [invokeai] map_chunk_size)")


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``compile``."""
    compile_cmd = sub.add_parser("compile", help="write a readable Airflow DAG file for a graph or workflow")
    compile_cmd.add_argument("file", help="graph or workflow JSON file")
    compile_cmd.add_argument("--dag-id", help="DAG id (default: the file name)")
    compile_cmd.add_argument("--granularity", choices=("segment", "node"), default="segment")
    add_chunk_size_option(compile_cmd, "per mapped task instance")
    compile_cmd.add_argument("-o", "--output", metavar="OUT.py", help="output file (default: stdout)")
    compile_cmd.set_defaults(func=cmd_compile)
