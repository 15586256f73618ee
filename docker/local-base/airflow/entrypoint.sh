#!/usr/bin/env bash
# Entrypoint of the local Airflow base image (see Containerfile): the behaviour of the official
# image's entrypoint that Airloop's compose file relies on, written for this project.
#   bash ARGS / python ARGS   run as given (compose's airflow-init: bash /opt/airloop/airflow-init.sh)
#   anything else             `airflow ARGS`, after waiting for the metadata database
#                             (`airflow db check`) and, for celery and scheduler, for the broker.
# CONNECTION_CHECK_MAX_COUNT (default 20, 0 skips the waits) and CONNECTION_CHECK_SLEEP_TIME
# (default 3 s) bound the waits, as in the official image.
set -euo pipefail

tries="${CONNECTION_CHECK_MAX_COUNT:-20}"
pause="${CONNECTION_CHECK_SLEEP_TIME:-3}"

wait_for() {  # wait_for WHAT COMMAND...
  local what="$1" n=0; shift
  until "$@" >/dev/null 2>&1; do
    n=$((n + 1))
    if (( n >= tries )); then
      echo "entrypoint: $what not reachable after $n tries" >&2
      "$@" || true
      exit 1
    fi
    sleep "$pause"
  done
}

broker_reachable() {
  python - <<'PY'
import os, socket, sys
from urllib.parse import urlsplit
url = os.environ.get("AIRFLOW__CELERY__BROKER_URL", "")
parts = urlsplit(url)
if not parts.hostname:
    sys.exit(0)
default = {"redis": 6379, "rediss": 6379, "amqp": 5672, "pyamqp": 5672}.get(parts.scheme, 0)
socket.create_connection((parts.hostname, parts.port or default), timeout=3).close()
PY
}

case "${1:-}" in
  bash) shift; exec /bin/bash "$@" ;;
  python) shift; exec python "$@" ;;
esac

if (( tries > 0 )) && [[ $# -gt 0 && "$1" != version ]]; then
  wait_for "the Airflow metadata database" airflow db check
  if [[ "$1" == celery || "$1" == scheduler ]]; then
    wait_for "the Celery broker" broker_reachable
  fi
fi
exec airflow "$@"
