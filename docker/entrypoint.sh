#!/usr/bin/env bash
# Entry point of the image built from docker/Dockerfile (every Airflow service of docker-compose.yml).
#
# 1. With INVOKEAI_ADMIN_PASSWORD set (the api-server), it writes the simple auth manager's password file,
#    so the UI and REST passwords are the ones the compose file was given (INVOKEAI_<USER>_PASSWORD), not
#    generated ones.
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
# each user's password from INVOKEAI_<USER>_PASSWORD; Airflow generates one for a user left out
names = [entry.split(":")[0].strip() for entry in users.split(",") if entry.strip()]
passwords = {name: os.environ[f"INVOKEAI_{name.upper()}_PASSWORD"] for name in names
             if os.environ.get(f"INVOKEAI_{name.upper()}_PASSWORD")}
os.makedirs(os.path.dirname(path), exist_ok=True)
descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(descriptor, "w") as file:
    json.dump(passwords, file)
    file.write("\n")
PY
    unset INVOKEAI_ADMIN_PASSWORD INVOKEAI_VIEWER_PASSWORD
fi

if [[ "${1:-}" == "invokeai-airflow" ]]; then
    shift
    set -- python -m invokeai_provider.cli "$@"
fi

exec /entrypoint "$@"
