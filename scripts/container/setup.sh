#!/usr/bin/env bash
# Install what the container test needs (tests/test_containers.py, marker "container"): buildah to
# build and run the image, debootstrap for its stand-in base. Needs root and apt-get; idempotent.
# podman/docker-style runs do not work on the development machines (setrlimit is forbidden), so the
# test uses "buildah bud/run --isolation chroot", which needs no OCI runtime.
set -euo pipefail
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "container/setup.sh: needs root and apt-get" >&2
  exit 1
fi
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends buildah debootstrap >/dev/null
fi
