"""``invokeai-airflow usage``: a tenant's usage records, summed."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_usage(args: argparse.Namespace) -> int:
    """A tenant's usage records, summed (see `invokeai_provider.execution.usage`)."""
    from invokeai_provider.execution.usage import format_summary, usage_report
    from invokeai_provider.storage.base import default_artifact_root

    summary = usage_report(args.artifacts or default_artifact_root(), args.tenant, dag_id=args.dag_id,
                           run_id=args.run_id, since=args.since)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_summary(summary))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``usage``."""
    usage = sub.add_parser("usage", help="sum a tenant's usage records: images, denoising steps, GPU seconds, models")
    usage.add_argument("--tenant", required=True, help="the tenant whose <tenant>/usage/ records are read")
    usage.add_argument("--artifacts", metavar="URI", help="artifact root (default: [invokeai] artifact_root)")
    usage.add_argument("--dag-id", help="only this DAG's runs")
    usage.add_argument("--run-id", help="only this run")
    usage.add_argument("--since", metavar="ISO", help="only tasks started at or after this date or time (UTC unless "
                                                      "an offset is given)")
    usage.add_argument("--json", action="store_true", help="print one JSON object: totals and one entry per run")
    usage.set_defaults(func=cmd_usage)
