#!/usr/bin/env bash
# Builds the local stand-ins for the official base images, for machines where registry images
# cannot be pulled (docker.io is out of reach here; Debian's packages and PyPI are not):
#
#   localhost/airloop/debian:bookworm             debootstrap --variant=minbase of Debian bookworm
#   localhost/airloop/airflow:<ver>-python3.11    for apache/airflow:<ver>-python3.11 (Dockerfile)
#   localhost/airloop/postgres:15-bookworm        for postgres:16 (compose service postgres)
#   localhost/airloop/redis:7.0-bookworm          for redis:7.2-bookworm (compose service redis)
#
# <ver> is apache-airflow's pin in requirements.lock. Each image carries a label with the hash
# of its inputs; an image whose inputs did not change is kept (a second run takes seconds).
# The Debian root filesystem is cached under AIRLOOP_LOCAL_BASE_CACHE. Prints the images as
# NAME=VALUE lines on stdout (AIRFLOW_BASE_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE), progress and
# timings on stderr. Needs root, debootstrap and podman (Debian packages).
#
# Nothing here is used where the official images can be pulled: the Dockerfile and the compose
# file default to them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../podman/env.sh
source "$repo/docker/podman/env.sh"

cache="${AIRLOOP_LOCAL_BASE_CACHE:-/var/tmp/airloop-local-base}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
nice_=(nice -n "${AIRLOOP_NICE:-15}")
label=org.airloop.inputs
mkdir -p "$cache"
airflow_version="$(sed -n 's/^apache-airflow==//p' "$repo/requirements.lock")"
[[ -n "$airflow_version" ]] || { echo "no apache-airflow pin in requirements.lock" >&2; exit 1; }

DEBIAN_IMAGE=localhost/airloop/debian:bookworm
AIRFLOW_BASE_IMAGE="localhost/airloop/airflow:${airflow_version}-python3.11"
POSTGRES_IMAGE=localhost/airloop/postgres:15-bookworm
REDIS_IMAGE=localhost/airloop/redis:7.0-bookworm

log() { echo "local-base: $*" >&2; }

# The inputs label an image is built from: hash of the given strings and files.
inputs_hash() {
  local item
  for item in "$@"; do
    if [[ -f "$item" ]]; then sha256sum <"$item"; else echo "$item"; fi
  done | sha256sum | cut -c1-16
}

current_label() {
  "${PODMAN[@]}" image inspect --format "{{ index .Labels \"$label\" }}" "$1" 2>/dev/null || true
}

# A private pip configuration for builds: this machine reaches PyPI through a proxy whose CA is
# in the host's bundle, so RUN steps see the host bundle and a pip.conf naming it.
build_mounts() {
  local bundle=/etc/ssl/certs/ca-certificates.crt
  printf '[global]\ncert = %s\n' "$bundle" >"$cache/pip.conf"
  echo "--volume=$bundle:$bundle:ro"
  echo "--volume=$cache/pip.conf:/etc/pip.conf:ro"
}

debian_image() {
  local cmd=(debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm)
  local hash
  hash="$(inputs_hash "${cmd[*]}" "$mirror")"
  if [[ "$(current_label "$DEBIAN_IMAGE")" == "$hash" ]]; then
    log "$DEBIAN_IMAGE is up to date"; return
  fi
  local rootfs="$cache/rootfs-$hash"
  if [[ ! -f "$rootfs/.airloop-complete" ]]; then
    log "debootstrap into $rootfs (a few minutes)"
    rm -rf "$rootfs"
    local t0=$SECONDS
    "${nice_[@]}" "${cmd[@]}" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
      || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    touch "$rootfs/.airloop-complete"
    log "debootstrap took $((SECONDS - t0)) s"
  fi
  local t0=$SECONDS
  tar -C "$rootfs" --exclude=./.airloop-complete -c . \
    | "${nice_[@]}" "${PODMAN[@]}" import --quiet \
        --change "LABEL $label=$hash" --change 'CMD ["/bin/bash"]' \
        --change 'ENV LANG=C.UTF-8' - "$DEBIAN_IMAGE" >/dev/null
  log "imported $DEBIAN_IMAGE in $((SECONDS - t0)) s"
}

# build IMAGE CONTAINERFILE_DIR [--build-arg ...]: the directory's files, the Debian image's
# label and the arguments are the inputs; requirements.lock too for the Airflow base.
build() {
  local image="$1" dir="$2"; shift 2
  local files=("$dir"/*)
  [[ "$image" == "$AIRFLOW_BASE_IMAGE" ]] && files+=("$repo/requirements.lock")
  local hash
  hash="$(inputs_hash "${files[@]}" "$(current_label "$DEBIAN_IMAGE")" "$@")"
  if [[ "$(current_label "$image")" == "$hash" ]]; then
    log "$image is up to date"; return
  fi
  log "building $image"
  local t0=$SECONDS mounts
  mapfile -t mounts < <(build_mounts)
  local buildlog="$cache/build-$(basename "$dir").log"
  "${nice_[@]}" "${PODMAN[@]}" build --network host "${mounts[@]}" \
      --label "$label=$hash" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" "$@" \
      --file "$dir/Containerfile" --tag "$image" "$repo" >"$buildlog" 2>&1 \
    || { tail -n 30 "$buildlog" >&2; log "build of $image failed (log: $buildlog)"; exit 1; }
  log "built $image in $((SECONDS - t0)) s"
}

debian_image
build "$AIRFLOW_BASE_IMAGE" "$here/airflow" --build-arg "AIRFLOW_VERSION=$airflow_version"
build "$POSTGRES_IMAGE" "$here/postgres"
build "$REDIS_IMAGE" "$here/redis"

echo "AIRFLOW_BASE_IMAGE=$AIRFLOW_BASE_IMAGE"
echo "POSTGRES_IMAGE=$POSTGRES_IMAGE"
echo "REDIS_IMAGE=$REDIS_IMAGE"
