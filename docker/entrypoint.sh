#!/usr/bin/env bash
# Entry point of the image built from docker/Dockerfile (every Airflow service of docker-compose.yml).
#
# 1. With INVOKEAI_ADMIN_PASSWORD set (the api-server), it writes the simple auth manager's password file,
#    so the UI and REST password is the one the compose file was given, not a generated one.
# 2. `invokeai-airflow ARGS...` runs this project's CLI; Airflow's own entrypoint would otherwise read it
#    as `airflow invokeai-airflow ...`.
# 3. Everything else goes to Airflow's entrypoint (/entrypoint): it waits for the database (and for
#    `scheduler` / `celery`, the broker) and runs `airflow ARGS...`, or `bash ...` / `python ...` as they are.
set -euo pipefail

if [[ -n "${INVOKEAI_ADMIN_PASSWORD:-}" ]]; then
    python - <<'PY'
import json
import os

path = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") or os.path.join(
    os.environ.get("AIRFLOW_HOME", "/opt/airflow"), "simple_auth_manager_passwords.json.generated")
users = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
passwords = {entry.split(":")[0].strip(): os.environ["INVOKEAI_ADMIN_PASSWORD"]
             for entry in users.split(",") if entry.strip()}
os.makedirs(os.path.dirname(path), exist_ok=True)
descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(descriptor, "w") as file:
    json.dump(passwords, file)
    file.write("\n")
PY
    unset INVOKEAI_ADMIN_PASSWORD
fi

if [[ "${1:-}" == "invokeai-airflow" ]]; then
    shift
    set -- python -m invokeai_provider.cli "$@"
fi

exec /entrypoint "$@"
