"""The ``invokeai-airflow`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from invokeai_provider.errors import InvokeAIProviderError, NodeFieldNotFoundError, NodeNotFoundError


def _parse_set(assignments: Sequence[str]) -> list[tuple[str, str, Any]]:
    """``NODE_ID.FIELD=VALUE``: VALUE is read as JSON when it parses, else taken as a string."""
    parsed = []
    for assignment in assignments:
        target, sep, raw = assignment.partition("=")
        node_id, dot, field = target.rpartition(".")
        if not sep or not dot or not node_id or not field:
            raise InvokeAIProviderError(f"--set {assignment!r}: expected NODE_ID.FIELD=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parsed.append((node_id, field, value))
    return parsed


def apply_overrides(graph_dict: dict[str, Any], overrides: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """Writes ``--set`` values into a graph dict; a field fed by an edge cannot be set."""
    from invokeai_provider.core.registry import InvocationRegistry

    nodes = {k: dict(v) for k, v in graph_dict["nodes"].items()}
    fed = {(e["destination"]["node_id"], e["destination"]["field"]): e["source"] for e in graph_dict["edges"]}
    for node_id, field, value in overrides:
        if node_id not in nodes:
            raise NodeNotFoundError(f"--set {node_id}.{field}: no node {node_id!r} in the graph", node_id=node_id)
        node_class = InvocationRegistry.get_invocation_class(nodes[node_id]["type"])
        if field not in node_class.input_fields():
            raise NodeFieldNotFoundError(
                f"--set {node_id}.{field}: node {node_id} ({node_class.get_type()}) has no input {field!r}; expected "
                f"one of: {', '.join(node_class.input_fields())}", node_id=node_id, field=field)
        if (node_id, field) in fed:
            source = fed[(node_id, field)]
            raise NodeFieldNotFoundError(
                f"--set {node_id}.{field}: the field is fed by an edge from {source['node_id']}.{source['field']}",
                node_id=node_id, field=field)
        nodes[node_id][field] = value
    return {**graph_dict, "nodes": nodes}


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


def _model_services(graph_dict: dict[str, Any], model_root: Optional[str]) -> dict[str, Any]:
    """The model service, when the graph names models (graphs without models need no registry)."""
    from invokeai_provider.models.model_manager.binding import graph_names_models

    if not graph_names_models(graph_dict):
        return {}
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    return {"models": ModelManager(ModelRegistry(model_root))}


def cmd_graph_run(args: argparse.Namespace) -> int:
    from invokeai_provider.graph.batch import expand_batch
    from invokeai_provider.core.context import RunContext
    from invokeai_provider.graph.engine import Engine, ExecutionState
    from invokeai_provider.graph.graph import Graph
    from invokeai_provider.storage.base import open_run_store
    from invokeai_provider.graph.workflow import load_document

    document = load_document(Path(args.file).read_text())
    graph_dict = apply_overrides(document.graph.to_dict(), _parse_set(args.set or []))
    services = _model_services(graph_dict, args.model_root)
    if services:
        from invokeai_provider.models.model_manager.binding import bind_model_fields

        graph_dict = bind_model_fields(graph_dict, services["models"].registry)
    graph = Graph.from_dict(graph_dict)
    graph.validate()
    sessions = expand_batch(graph, document.batch)[0] if document.batch else [graph]
    run_id = args.run_id or f"cli-{uuid.uuid4().hex[:12]}"
    from invokeai_provider.execution.tenants import check_tenant

    store = open_run_store(args.artifacts, tenant=check_tenant(args.tenant, field="--tenant"),
                           dag_id=Path(args.file).stem, run_id=run_id)
    workflow_json = document.workflow.raw if document.workflow else None
    results = []
    for index, session in enumerate(sessions):
        run = RunContext(store=store, graph_json=session.to_dict(), workflow_json=workflow_json,
                         name_prefix=f"s{index}." if document.batch else "", services=services)
        state = Engine(run).run(ExecutionState(session))
        results.append(state.leaf_outputs())
        for records in state.records.values():
            for record in records:
                print(f"saved {record['uri']}", file=sys.stderr)
    json.dump(results if document.batch else results[0], sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_graph_validate(args: argparse.Namespace) -> int:
    from invokeai_provider.graph.workflow import load_document

    document = load_document(Path(args.file).read_text())
    document.graph.validate()
    if document.batch:
        document.batch.check_against(document.graph)
    workflow = document.workflow
    kind = f"workflow {workflow.name!r} (meta {workflow.meta_version})" if workflow else "graph"
    batch = f", a batch of {document.batch.session_count()} sessions" if document.batch else ""
    print(f"{args.file}: valid {kind}, {len(document.graph.nodes)} nodes, {len(document.graph.edges)} edges{batch}")
    return 0


def cmd_models_install(args: argparse.Namespace) -> int:
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    config = install_model(ModelRegistry(args.model_root), args.source, name=args.name, inplace=args.inplace,
                           allow_pickle=args.allow_pickle, allow_private_urls=args.allow_private_urls,
                           config_path=args.config)
    print(f"installed {config.name!r}: {config.base.value} {config.type.value} ({config.format.value}), "
          f"key {config.key}, {config.hash}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    configs = sorted(ModelRegistry(args.model_root).all(), key=lambda c: (c.base.value, c.type.value, c.name))
    if args.json:
        json.dump([c.model_dump(mode="json") for c in configs], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for c in configs:
            print(f"{c.name:<32} {c.base.value:<13} {c.type.value:<10} {c.format.value:<11} {c.key}")
    return 0


DEMO_MODEL = "tiny-sd15"
DEMO_WORKFLOW = Path(__file__).resolve().parents[1] / "dags" / "workflows" / "sd15-text-to-image.json"


def ensure_demo_model(model_root: Optional[str]) -> None:
    """Builds and installs the tiny random-weight SD1.5 model unless it is registered already."""
    from invokeai_provider.models.model_manager.registry import ModelRegistry, UnknownModelError

    registry = ModelRegistry(model_root)
    try:
        registry.find(DEMO_MODEL)
    except UnknownModelError:
        from invokeai_provider.models.model_manager.install import install_model
        from invokeai_provider.models.testing.tiny import build_sd_model

        if registry.is_remote:  # built in a scratch folder and uploaded
            import tempfile

            with tempfile.TemporaryDirectory(prefix="invokeai-demo-model-") as scratch:
                print(f"building the tiny random-weight SD1.5 model for {registry.location}", file=sys.stderr)
                install_model(registry, str(build_sd_model("sd-1", Path(scratch) / DEMO_MODEL)), name=DEMO_MODEL)
            return
        target = registry.root / "tiny" / DEMO_MODEL
        if not target.exists():
            print(f"building the tiny random-weight SD1.5 model in {target}", file=sys.stderr)
            build_sd_model("sd-1", target)
        install_model(registry, str(target), name=DEMO_MODEL, inplace=True)


def cmd_demo(args: argparse.Namespace) -> int:
    """Text to image through Airflow: the SD1.5 workflow DAG with the tiny model, one dag.test() run."""
    ensure_demo_model(args.model_root)
    if not DEMO_WORKFLOW.is_file():
        raise InvokeAIProviderError(f"the demo workflow {DEMO_WORKFLOW} is missing (run the demo from a clone)")
    sets = [f"model={DEMO_MODEL}", f"positive_prompt={json.dumps(args.prompt)}", f"seed={args.seed}",
            f"denoise_steps={args.steps}", f"noise_width={args.size}", f"noise_height={args.size}"]
    run_args = argparse.Namespace(file=str(DEMO_WORKFLOW), set=sets, artifacts=args.artifacts,
                                  model_root=args.model_root, home=args.home, dag_id=None, granularity="segment",
                                  json=False)
    return cmd_run(run_args)


def _split_sets(assignments: Sequence[str]) -> tuple[dict[str, Any], list[tuple[str, str, Any]]]:
    """``NAME=VALUE`` sets a DAG Param (run conf); ``NODE_ID.FIELD=VALUE`` edits the document itself."""
    conf: dict[str, Any] = {}
    node_sets = []
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        if not sep or not name:
            raise InvokeAIProviderError(f"--set {assignment!r}: expected PARAM=VALUE or NODE_ID.FIELD=VALUE")
        if "." in name:
            node_sets.extend(_parse_set([assignment]))
            continue
        try:
            conf[name] = json.loads(raw)
        except json.JSONDecodeError:
            conf[name] = raw
    return conf, node_sets


def cmd_run(args: argparse.Namespace) -> int:
    """Compiles the document into a DAG and runs it once through Airflow (SQLite, local artifact store)."""
    from invokeai_provider.compiler.dags import load_compiled
    from invokeai_provider.compiler.dags import dag_id_for
    from invokeai_provider.cluster.local_airflow import (migrate_database, patch_document, prepare_home, run_dag,
                                                 write_dag_file)

    if args.artifacts:
        os.environ["AIRFLOW__INVOKEAI__ARTIFACT_ROOT"] = args.artifacts
    if args.model_root:
        os.environ["AIRFLOW__INVOKEAI__MODEL_ROOT"] = args.model_root
    home = prepare_home(Path(args.home or os.environ.get("INVOKEAI_AIRFLOW_HOME") or ".airflow"))
    source = Path(args.file)
    dag_id = args.dag_id or dag_id_for(source)
    conf, node_sets = _split_sets(args.set or [])
    if getattr(args, "tenant", None):
        conf["tenant"] = args.tenant  # the DAG's tenant Param: Airflow validates it before the run exists
    if node_sets:
        patched = patch_document(json.loads(source.read_text()), node_sets)
        source = home / "documents" / f"{dag_id}.json"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(json.dumps(patched, indent=1))
    compiled = load_compiled(source, granularity=args.granularity)  # a broken document fails here, clearly
    known = {spec.name for spec in compiled.param_specs}
    unknown = sorted(set(conf) - known - {"tenant"})
    if unknown:
        raise InvokeAIProviderError(f"--set {', '.join(unknown)}: not a parameter of this DAG; expected one of: "
                                    f"{', '.join(sorted(known)) or '(none)'} (or NODE_ID.FIELD=VALUE)")
    write_dag_file(home, source, dag_id, args.granularity)
    migrate_database(home)
    print(f"running DAG {dag_id!r} through Airflow (home {home})", file=sys.stderr)
    with _stdout_to_stderr():  # Airflow logs to stdout; stdout is for the result
        result = run_dag(home, dag_id, conf)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        for task in result.tasks:
            label = f" [{task['label']}]" if task.get("label") else ""
            index = f"[{task['map_index']}]" if task["map_index"] >= 0 else ""
            print(f"task {task['task_id']}{index}{label}: {task['state']} (queue {task['queue']})", file=sys.stderr)
        json.dump([{k: v for k, v in r.items() if k != "metadata"} for r in result.images], sys.stdout, indent=2)
        sys.stdout.write("\n")
        print(f"DAG run {result.run_id}: {result.state}, {len(result.images)} images", file=sys.stderr)
    return 0 if result.state == "success" else 1


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Sends everything written to file descriptor 1 (including by child loggers) to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def cmd_compile(args: argparse.Namespace) -> int:
    from invokeai_provider.compiler.dags import render_dag_file
    from invokeai_provider.compiler.dags import dag_id_for

    source = Path(args.file)
    dag_id = args.dag_id or dag_id_for(source)
    text = render_dag_file(source, dag_id=dag_id, granularity=args.granularity, source_name=source.name)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}: DAG {dag_id!r}", file=sys.stderr)
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    """The local distributed cluster: up, down, status, env."""
    from invokeai_provider.cluster import cluster
    state_dir = Path(args.state_dir)
    if args.action == "up":
        settings = cluster.up(state_dir, Path(args.dags_folder), database=args.database, api_port=args.api_port,
                              demo_model=not args.no_demo_model, runtime=not args.no_runtime, timeout=args.timeout)
        print(f"cluster up: {settings.api_url} (user {cluster.ADMIN_USER}, password {settings.admin_password})")
        print(f"S3: {settings.seaweed.endpoint_url}; state, logs and credentials in {settings.state_dir}")
        return 0
    if args.action == "down":
        cluster.down(state_dir, purge=args.purge)
        print("cluster down" + (" (database and state removed)" if args.purge else ""))
        return 0
    if args.action == "env":
        settings = cluster.ClusterSettings.load(state_dir.resolve())
        for key, value in sorted(cluster.airflow_env(settings).items()):
            print(f"export {key}={shlex.quote(value)}")
        return 0
    report = cluster.status(state_dir.resolve())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, service in report["services"].items():
            print(f"{name:15} {'running' if service['alive'] else 'DOWN':8} pid {service['pid']}  "
                  f"restarts {service['restarts']}")
        print(f"api-server {report['api_url']}: {json.dumps(report['health'])}")
        runtime = report.get("runtime")
        if runtime:
            print(f"GPU runtime on {runtime['device']}: jobs run {runtime['jobs_run']}; " + "; ".join(
                f"model cache {c['hits']} hits, {c['misses']} misses, {c['load_seconds']:.2f} s loading"
                for c in runtime["model_caches"].values()))
        elif runtime is None:
            print("GPU runtime: not answering")
    healthy = report["supervisor_alive"] and all(s["alive"] for s in report["services"].values())
    return 0 if healthy else 3


def cmd_usage(args: argparse.Namespace) -> int:
    """A tenant's usage records, summed (see `invokeai_provider.execution.usage`)."""
    from invokeai_provider.storage.base import default_artifact_root
    from invokeai_provider.execution.usage import format_summary, usage_report

    summary = usage_report(args.artifacts or default_artifact_root(), args.tenant, dag_id=args.dag_id,
                           run_id=args.run_id, since=args.since)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_summary(summary))
    return 0


def _runtime_socket(args: argparse.Namespace) -> str:
    from invokeai_provider.config import get_option

    path = args.socket or get_option("runtime_socket")
    if not path:
        raise InvokeAIProviderError("runtime: give --socket PATH or set [invokeai] runtime_socket")
    return path


def cmd_runtime(args: argparse.Namespace) -> int:
    """The per-GPU runtime: serve it, ask it for its status, or have it preload models."""
    from invokeai_provider.config import get_option
    from invokeai_provider.execution.runtime.client import RuntimeClient

    socket_path = _runtime_socket(args)
    if args.action == "serve":
        from invokeai_provider.execution.runtime.server import RuntimeServer

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        preload = list(args.preload or []) or [m.strip() for m in (get_option("runtime_preload") or "").split(",")
                                               if m.strip()]
        RuntimeServer(socket_path, args.device, preload=preload, model_root=args.model_root or get_option("model_root"),
                      ram_cache_gb=args.ram_cache_gb, vram_cache_gb=args.vram_cache_gb,
                      max_batch=args.max_batch).serve_forever()
        return 0
    client = RuntimeClient(socket_path)
    if args.action == "preload":
        if not args.models:
            raise InvokeAIProviderError("runtime preload: name at least one model (name or key)")
        answer = client.preload(list(args.models), args.model_root or get_option("model_root"))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="invokeai-airflow", description="InvokeAI node graphs on Apache Airflow.")
    sub = parser.add_subparsers(dest="command", required=True)

    nodes = sub.add_parser("nodes", help="list the registered node types")
    nodes.add_argument("--json", action="store_true", help="print every type with its input and output schema")
    nodes.set_defaults(func=cmd_nodes)

    graph = sub.add_parser("graph", help="validate or run an InvokeAI graph or saved workflow in this process")
    graph_sub = graph.add_subparsers(dest="graph_command", required=True)
    run = graph_sub.add_parser("run", help="run a graph or workflow and print each leaf node's outputs as JSON")
    run.add_argument("file", help="graph or workflow JSON file")
    run.add_argument("--set", action="append", metavar="NODE_ID.FIELD=VALUE",
                     help="set a node input (VALUE is parsed as JSON when possible); repeatable")
    run.add_argument("--artifacts", metavar="URI", help="artifact root (default: [invokeai] artifact_root or ./artifacts)")
    run.add_argument("--model-root", metavar="URI", help="model root (default: [invokeai] model_root)")
    run.add_argument("--tenant", default="default", help="storage tenant prefix (default: default)")
    run.add_argument("--run-id", help="run id used in artifact keys (default: a new one)")
    run.set_defaults(func=cmd_graph_run)
    validate = graph_sub.add_parser("validate", help="check a graph or workflow without running it")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_graph_validate)

    demo = sub.add_parser("demo", help="text to image through Airflow with a tiny SD1.5 model built on this machine")
    demo.add_argument("--prompt", default="a lighthouse on a cliff at sunset, oil painting")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--steps", type=int, default=12)
    demo.add_argument("--size", type=int, default=128, help="width and height in pixels (multiple of 8)")
    demo.add_argument("--model-root", metavar="URI", help="model root (default: [invokeai] model_root)")
    demo.add_argument("--artifacts", metavar="URI", help="artifact root (default: [invokeai] artifact_root)")
    demo.add_argument("--home", metavar="DIR", help="Airflow home for the embedded run (default: ./.airflow)")
    demo.set_defaults(func=cmd_demo)

    run_cmd = sub.add_parser("run", help="compile a graph or workflow into a DAG and run it once through Airflow")
    run_cmd.add_argument("file", help="graph or workflow JSON file")
    run_cmd.add_argument("--set", action="append", metavar="PARAM=VALUE",
                         help="a DAG Param (trigger form field) for the run conf, or NODE_ID.FIELD=VALUE to edit the "
                              "document; VALUE is parsed as JSON when possible; repeatable")
    run_cmd.add_argument("--dag-id", help="DAG id (default: the file name)")
    run_cmd.add_argument("--granularity", choices=("segment", "node"), default="segment")
    run_cmd.add_argument("--home", metavar="DIR", help="Airflow home (default: $INVOKEAI_AIRFLOW_HOME or ./.airflow)")
    run_cmd.add_argument("--artifacts", metavar="URI", help="artifact root (default: [invokeai] artifact_root)")
    run_cmd.add_argument("--model-root", metavar="URI", help="model root (default: [invokeai] model_root)")
    run_cmd.add_argument("--json", action="store_true", help="print the whole run (tasks, records, asset events)")
    run_cmd.add_argument("--tenant", help="the run's tenant Param: its storage prefix (default: [invokeai] "
                                          "default_tenant)")
    run_cmd.set_defaults(func=cmd_run)

    compile_cmd = sub.add_parser("compile", help="write a readable Airflow DAG file for a graph or workflow")
    compile_cmd.add_argument("file", help="graph or workflow JSON file")
    compile_cmd.add_argument("--dag-id", help="DAG id (default: the file name)")
    compile_cmd.add_argument("--granularity", choices=("segment", "node"), default="segment")
    compile_cmd.add_argument("-o", "--output", metavar="OUT.py", help="output file (default: stdout)")
    compile_cmd.set_defaults(func=cmd_compile)

    cluster_cmd = sub.add_parser("cluster", help="a local distributed cluster on loopback: Celery, PostgreSQL, S3")
    cluster_cmd.add_argument("action", choices=("up", "down", "status", "env"),
                             help="start (and wait until healthy), stop, report, or print the shell exports "
                                  "that point the airflow CLI at it")
    cluster_cmd.add_argument("--state-dir", default=".cluster", help="state, logs and credentials (default: .cluster)")
    cluster_cmd.add_argument("--dags-folder", default="dags", help="the dags folder (default: ./dags)")
    cluster_cmd.add_argument("--database", help="PostgreSQL database (default: invokeai_airflow)")
    cluster_cmd.add_argument("--api-port", type=int, help="api-server port (default: 28080)")
    cluster_cmd.add_argument("--no-demo-model", action="store_true", help="do not install the tiny demo model")
    cluster_cmd.add_argument("--no-runtime", action="store_true",
                             help="with a new cluster: no GPU runtime; gpu tasks load their models in-process, one "
                                  "at a time")
    cluster_cmd.add_argument("--timeout", type=float, default=300, help="seconds to wait for health (default: 300)")
    cluster_cmd.add_argument("--purge", action="store_true", help="with down: drop the database and the state dir")
    cluster_cmd.add_argument("--json", action="store_true", help="with status: print JSON")
    cluster_cmd.set_defaults(func=cmd_cluster)

    usage = sub.add_parser("usage", help="sum a tenant's usage records: images, denoising steps, GPU seconds, models")
    usage.add_argument("--tenant", required=True, help="the tenant whose <tenant>/usage/ records are read")
    usage.add_argument("--artifacts", metavar="URI", help="artifact root (default: [invokeai] artifact_root)")
    usage.add_argument("--dag-id", help="only this DAG's runs")
    usage.add_argument("--run-id", help="only this run")
    usage.add_argument("--since", metavar="ISO", help="only tasks started at or after this date or time (UTC unless "
                                                      "an offset is given)")
    usage.add_argument("--json", action="store_true", help="print one JSON object: totals and one entry per run")
    usage.set_defaults(func=cmd_usage)

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

    models = sub.add_parser("models", help="install and list models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    install = models_sub.add_parser("install", help="install a model from a path, an http(s) URL or a HF repo id")
    install.add_argument("source")
    install.add_argument("--name", help="name to register it under (default: the file or folder name)")
    install.add_argument("--inplace", action="store_true",
                         help="register a local path where it is instead of copying (local model roots only)")
    install.add_argument("--allow-pickle", action="store_true",
                         help="accept a pickled checkpoint (.ckpt/.pt/.bin); it is scanned before it is read")
    install.add_argument("--allow-private-urls", action="store_true", help="allow URLs that resolve to private hosts")
    install.add_argument("--config", metavar="DIR",
                         help="for a single-file checkpoint: a diffusers folder of the same architecture")
    install.add_argument("--model-root", metavar="URI",
                         help="model root, file:///path or s3://[CONN_ID@]bucket/prefix (default: [invokeai] model_root)")
    install.set_defaults(func=cmd_models_install)
    listing = models_sub.add_parser("list", help="list the registered models")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--model-root", metavar="URI", help="model root (default: [invokeai] model_root)")
    listing.set_defaults(func=cmd_models_list)
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


if __name__ == "__main__":
    sys.exit(main())
