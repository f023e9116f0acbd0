"""``invokeai-airflow nodes``: the registered node types."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_nodes(args: argparse.Namespace) -> int:
    from invokeai_provider.core.schema import describe_nodes

    described = describe_nodes()
    if args.json:
        json.dump(described, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for entry in described:
            print(f"{entry['type']:<36} {entry['category'] or '-':<12} {entry['version']:<8} {entry['title'] or ''}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``nodes``."""
    nodes = sub.add_parser("nodes", help="list the registered node types")
    nodes.add_argument("--json", action="store_true", help="print every type with its input and output schema")
    nodes.set_defaults(func=cmd_nodes)
