# Sourced by docker/local-base/build.sh and tests/stack/compose_run.py's shell steps: one place
# for the podman engine Airloop uses on a machine without Docker. Engine settings come from
# docker/podman/containers.conf; images, containers and volumes live in a private store under
# AIRLOOP_PODMAN_STATE (never in the repo, never in the machine's default store).
_airloop_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$_airloop_repo/docker/podman/containers.conf}"
export AIRLOOP_PODMAN_STATE="${AIRLOOP_PODMAN_STATE:-/var/tmp/airloop-podman}"
export AIRLOOP_PODMAN_RUNROOT="${AIRLOOP_PODMAN_RUNROOT:-/run/airloop-podman}"
PODMAN=(podman --root "$AIRLOOP_PODMAN_STATE/storage" --runroot "$AIRLOOP_PODMAN_RUNROOT")
