#!/usr/bin/env bash
# Entrypoint of the local Redis image (see Containerfile), written for Airloop.
# `redis-server ARGS`: runs as user redis in /data with no config file; the container's network
# is the boundary, so protected mode (which refuses other hosts without a password) is off.
set -euo pipefail

if [[ "${1:-}" == redis-server ]]; then
  shift
  if [[ "$(id -u)" == 0 ]]; then
    chown -R redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups \
      redis-server --dir /data --protected-mode no "$@"
  fi
  exec redis-server --dir /data --protected-mode no "$@"
fi
exec "$@"
