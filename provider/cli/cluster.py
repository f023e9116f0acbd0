"""``invokeai-airflow cluster up|down|status|env``: the local distributed cluster (Celery, PostgreSQL, S3)."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path


def cmd_cluster(args: argparse.Namespace) -> int:
    """The local distributed cluster: up, down, status, env."""
    from invokeai_provider.cluster import cluster
    state_dir = Path(args.state_dir)
    if args.action == "up":
        settings = cluster.up(state_dir, Path(args.dags_folder), database=args.database, api_port=args.api_port,
                              demo_model=not args.no_demo_model, runtime=not args.no_runtime, timeout=args.timeout)
        print(f"cluster up: {settings.api_url} (user {cluster.ADMIN_USER}, password {settings.admin_password}; "
              f"user {cluster.VIEWER_USER}, password {settings.viewer_password}, sees no tenant's images)")
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


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``cluster``."""
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
