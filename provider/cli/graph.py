"""``invokeai-airflow graph run|validate``: a graph or saved workflow in this process, without Airflow."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any, Optional

from invokeai_provider.cli.compile import add_chunk_size_option
from invokeai_provider.cli.overrides import apply_overrides, parse_set


def _model_services(graph_dict: dict[str, Any], model_root: Optional[str]) -> dict[str, Any]:
    """The model service, when the graph names models (graphs without models need no registry)."""
    from invokeai_provider.models.model_manager.binding import graph_names_models

    if not graph_names_models(graph_dict):
        return {}
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    return {"models": ModelManager(ModelRegistry(model_root))}


def cmd_graph_run(args: argparse.Namespace) -> int:
    from invokeai_provider.config import settings
    from invokeai_provider.execution.chunks import chunk_ranges
    from invokeai_provider.execution.graph_runs import GraphJob, TaskEnvironment, run_graphs
    from invokeai_provider.execution.tenants import check_tenant, resolve_tenant
    from invokeai_provider.graph.batch import expand_batch
    from invokeai_provider.graph.graph import Graph
    from invokeai_provider.graph.workflow import load_document

    document = load_document(Path(args.file).read_text(), args.file)
    graph_dict = apply_overrides(document.graph.to_dict(), parse_set(args.set or []))
    services = _model_services(graph_dict, args.model_root)
    if services:
        from invokeai_provider.models.model_manager.binding import bind_model_fields

        graph_dict = bind_model_fields(graph_dict, services["models"].registry)
    graph = Graph.from_dict(graph_dict)
    graph.validate()
    sessions = expand_batch(graph, document.batch)[0] if document.batch else [graph]
    tenant = check_tenant(args.tenant, field="--tenant") if args.tenant is not None else resolve_tenant()
    env = TaskEnvironment(dag_id=Path(args.file).stem, run_id=args.run_id or f"cli-{uuid.uuid4().hex[:12]}",
                          task_id="graph", artifact_root=args.artifacts, model_root=args.model_root, tenant=tenant)
    leaves = list(graph.leaves())
    jobs = [GraphJob(session.to_dict(), env.for_item(index if document.batch else None), persist=leaves)
            for index, session in enumerate(sessions)]
    results = []
    # a batch's sessions in chunks, as a mapped task runs them: one engine call each (shared node cache,
    # intermediates in memory, denoise nodes batched), so memory stays that of one chunk however long the batch
    for first, last in chunk_ranges(len(jobs), args.chunk_size or settings("map_chunk_size").map_chunk_size):
        for state in run_graphs(jobs[first:last + 1], services,
                                workflow_json=document.workflow.raw if document.workflow else None):
            results.append(state.leaf_outputs())
            for records in state.records.values():
                for record in records:
                    print(f"saved {record['uri']}", file=sys.stderr)
    json.dump(results if document.batch else results[0], sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_graph_validate(args: argparse.Namespace) -> int:
    from invokeai_provider.graph.workflow import load_document

    document = load_document(Path(args.file).read_text(), args.file)
    document.graph.validate()
    if document.batch:
        document.batch.check_against(document.graph)
    workflow = document.workflow
    kind = f"workflow {workflow.name!r} (meta {workflow.meta_version})" if workflow else "graph"
    batch = f", a batch of {document.batch.session_count()} sessions" if document.batch else ""
    print(f"{args.file}: valid {kind}, {len(document.graph.nodes)} nodes, {len(document.graph.edges)} edges{batch}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``graph run`` and ``graph validate``."""
    graph = sub.add_parser("graph", help="validate or run an InvokeAI graph or saved workflow in this process")
    graph_sub = graph.add_subparsers(dest="graph_command", required=True)
    run = graph_sub.add_parser("run", help="run a graph or workflow and print each leaf node's outputs as JSON")
    run.add_argument("file", help="graph or workflow JSON file")
    run.add_argument("--set", action="append", metavar="NODE_ID.FIELD=VALUE",
                     help="set a node input (VALUE is parsed as JSON when possible); repeatable")
    run.add_argument("--artifacts", metavar="URI", help="artifact root (default: [invokeai] artifact_root or ./artifacts)")
    run.add_argument("--model-root", metavar="URI", help="model root (default: [invokeai] model_root)")
    run.add_argument("--tenant", help="storage tenant prefix (default: [invokeai] default_tenant, itself 'default')")
    run.add_argument("--run-id", help="run id used in artifact keys (default: a new one)")
    add_chunk_size_option(run, "run together in one engine call")
    run.set_defaults(func=cmd_graph_run)
    validate = graph_sub.add_parser("validate", help="check a graph or workflow without running it")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_graph_validate)
