#!/usr/bin/env bash
# One-shot set-up before the Airflow components start: the compose service airflow-init.
# Idempotent; re-run it with `docker compose run --rm airflow-init` (e.g. after adding a model).
#
#   0. refuses placeholder, empty or short secrets (every other Airloop service waits for this),
#   1. creates Airloop's directories (settings from the environment),
#   2. migrates the Airflow metadata database,
#   3. writes the admin password (AIRLOOP_ADMIN_PASSWORD) for the simple auth manager,
#   4. parses the DAG folder into the database, then unpauses the DAGs whose id matches
#      AIRLOOP_UNPAUSE_DAGS (a regular expression, default "__": every <model>__<stage> DAG;
#      set it empty to unpause nothing). DAGs must be parsed before they can be unpaused.
set -euo pipefail

: "${AIRLOOP_ADMIN_PASSWORD:?set AIRLOOP_ADMIN_PASSWORD in .env (see .env.example)}"
passwords="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?}"
users="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:?}"
admin="${users%%:*}"
unpause="${AIRLOOP_UNPAUSE_DAGS-__}"

python -m airloop.cli check-secrets

python -c 'from airloop.settings import ensure_dirs; print("airloop: state under", ensure_dirs().home)'

airflow db migrate

mkdir -p "$(dirname "$passwords")"
(
  umask 077
  ADMIN="$admin" python -c 'import json, os; print(json.dumps({os.environ["ADMIN"]: os.environ["AIRLOOP_ADMIN_PASSWORD"]}))' \
    >"$passwords.tmp"
  mv "$passwords.tmp" "$passwords"
)
echo "airloop: password of Airflow user '$admin' written to $passwords"

if [[ -n "$unpause" ]]; then
  airflow dags reserialize
  airflow dags unpause --treat-dag-id-as-regex --yes "$unpause"
fi
echo "airloop: airflow-init done"
