"""``invokeai-airflow demo`` and ``run``: a document compiled into a DAG and run once through an embedded Airflow
(SQLite home, local artifact store); the demo runs the SD1.5 workflow with a tiny model built on this machine."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from invokeai_provider.cli.overrides import parse_set
from invokeai_provider.errors import InvokeAIProviderError

DEMO_MODEL = "tiny-sd15"
DEMO_WORKFLOW = Path(__file__).resolve().parents[2] / "dags" / "workflows" / "sd15-text-to-image.json"


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
            node_sets.extend(parse_set([assignment]))
            continue
        try:
            conf[name] = json.loads(raw)
        except json.JSONDecodeError:
            conf[name] = raw
    return conf, node_sets


def _node_types(raw: Any) -> dict[str, Any]:
    """Node id -> type of a graph, a saved workflow or a batch document."""
    graph = (raw["batch"].get("graph") or {}) if isinstance(raw.get("batch"), dict) else raw
    nodes = graph.get("nodes")
    if isinstance(nodes, list):  # a saved workflow
        return {str(node.get("id")): (node.get("data") or {}).get("type") for node in nodes}
    return {str(node_id): node.get("type") for node_id, node in (nodes or {}).items() if isinstance(node, dict)}


def bind_model_sets(raw: Any, node_sets: list[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
    """``NODE_ID.FIELD=NAME`` on a model field becomes the registered model's identifier, as `graph run` binds
    it; other edits are kept as they are (the document's own validation judges them)."""
    from invokeai_provider.core.registry import InvocationRegistry
    from invokeai_provider.models.model_manager.binding import bind_model_value, model_fields_of

    types = _node_types(raw)
    registry = None
    bound = []
    for node_id, field, value in node_sets:
        node_type = types.get(node_id)
        if (value is not None and isinstance(node_type, str) and InvocationRegistry.has_type(node_type)
                and field in model_fields_of(node_type)):
            if registry is None:
                from invokeai_provider.models.model_manager.registry import ModelRegistry

                registry = ModelRegistry()  # [invokeai] model_root
            value = bind_model_value(node_id, node_type, field, value, registry)
        bound.append((node_id, field, value))
    return bound


def cmd_run(args: argparse.Namespace) -> int:
    """Compiles the document into a DAG and runs it once through Airflow (SQLite, local artifact store)."""
    from invokeai_provider.cluster.local_airflow import (
        migrate_database,
        patch_document,
        prepare_home,
        run_dag,
        write_dag_file,
    )
    from invokeai_provider.compiler.dags import dag_id_for, load_compiled

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
        raw = json.loads(source.read_text())
        patched = patch_document(raw, bind_model_sets(raw, node_sets))
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


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``demo`` and ``run``."""
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
