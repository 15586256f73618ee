#!/usr/bin/env bash
# Starts the compose service mlflow: `mlflow server "$@"` behind MLflow's own basic-auth app
# (the arguments come from docker-compose.yaml and include `--app-name basic-auth`).
#
#   1. refuses placeholder, empty or short secrets, as airflow-init does (airloop.cli check-secrets
#      also checks MLFLOW_AUTH_ADMIN_PASSWORD and MLFLOW_FLASK_SERVER_SECRET_KEY);
#   2. writes the auth app's configuration, owner-only, to a fresh temporary directory: the user
#      store on Postgres (AIRLOOP_MLFLOW_AUTH_DB), authenticated users may read, nobody else.
#      The admin's name and password are not written: MLflow reads them from
#      MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD (compose sets both from .env).
#
# MLflow uses the admin password only to create the admin user in an empty user store: changing
# MLFLOW_ADMIN_PASSWORD in .env later does not change it (use MLflow's update-password API or
# `docker compose down -v`).
set -euo pipefail

: "${MLFLOW_AUTH_ADMIN_USERNAME:?set MLFLOW_ADMIN_USER in .env (see .env.example)}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_ADMIN_PASSWORD in .env (see .env.example)}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_SECRET_KEY in .env (see .env.example)}"
: "${AIRLOOP_MLFLOW_AUTH_DB:?AIRLOOP_MLFLOW_AUTH_DB (the auth user store URL) is not set}"

python -m airloop.cli check-secrets

umask 077
config_dir="$(mktemp -d)"
# configparser reads % as interpolation: double it in the URL.
cat >"$config_dir/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = ${AIRLOOP_MLFLOW_AUTH_DB//%/%%}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
export MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"
echo "airloop: MLflow basic auth for admin user '$MLFLOW_AUTH_ADMIN_USERNAME', user store $(sed -E 's#//[^@/]*@#//***@#' <<<"$AIRLOOP_MLFLOW_AUTH_DB")"

exec mlflow server "$@"
