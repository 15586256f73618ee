#!/usr/bin/env bash
# Creates Airloop's databases on the compose Postgres, one per tool:
#   airflow (metadata + Celery results), mlflow (tracking + registry), feast (SQL registry),
#   airloop (the prediction log).
#
# The postgres image runs this once, from /docker-entrypoint-initdb.d, when its data volume is
# empty; the databases belong to POSTGRES_USER. Safe to run again: existing databases are kept.
# The list comes from AIRLOOP_DATABASES (space-separated). Outside the container (the native
# rehearsal) the usual libpq variables (PGHOST, PGPORT) pick the server.
set -euo pipefail

owner="${POSTGRES_USER:?POSTGRES_USER is not set}"
for db in ${AIRLOOP_DATABASES:?AIRLOOP_DATABASES is not set}; do
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$owner" --dbname "${POSTGRES_DB:-$owner}" \
    --set db="$db" --set owner="$owner" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db')
\gexec
SQL
  echo "airloop: database $db ready"
done
