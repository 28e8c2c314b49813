#!/usr/bin/env bash
# Build (or reuse) the stand-in for the Dockerfile's base image and print its name.
#
# The official base (tensorflow/tensorflow:<version>-gpu) cannot be pulled where the tests run (no
# image registry is reachable). The stand-in is what the Dockerfile needs of it: a Debian bookworm
# (debootstrap --variant=minbase) with python3 (3.11) and pip, PIP_BREAK_SYSTEM_PACKAGES=1 (pip may
# install into the system Python, as in the official image) and this machine's CA bundle (pip reaches
# the package index through a TLS proxy the image must trust). No CUDA, no TensorFlow: `pip install`
# brings TensorFlow's CPU-capable wheel instead of finding it installed.
#
# Cached twice, keyed by this script, the CA bundle and the suite (a changed one makes a new key, and
# the stale tarballs and images are removed): the root file system as a tarball under
# $BIONN_CONTAINER_CACHE (default /var/cache/bionn), the image in buildah's storage.
# Needs root, buildah and debootstrap (scripts/container/setup.sh installs them).
set -euo pipefail
SUITE=bookworm
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CACHE=${BIONN_CONTAINER_CACHE:-/var/cache/bionn}
REPO=localhost/bionn-standin-base

key=$(cat "$0" "$CA_BUNDLE" <(echo "$SUITE") | sha256sum | cut -c1-12)
image="$REPO:$key"
if buildah inspect --type image "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

mkdir -p "$CACHE"
tarball="$CACHE/standin-$SUITE-$key.tar"
if [ ! -f "$tarball" ]; then
  # The Debian mirror this machine's apt uses (debootstrap's default when none is configured).
  mirror=$(grep -h -m1 -o -E '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list.d/debian.sources \
    /etc/apt/sources.list 2>/dev/null | awk 'NR==1 {print $NF}' || true)
  work=$(mktemp -d "$CACHE/.standin-XXXXXX")
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    "$SUITE" "$work/rootfs" ${mirror:+"$mirror"} >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
  mv "$work/rootfs.tar" "$tarball"  # atomic: a cut-short run leaves no half tarball
fi

container=$(buildah from scratch)
buildah add "$container" "$tarball" / >/dev/null
buildah copy "$container" "$CA_BUNDLE" /etc/ssl/certs/ca-certificates.crt >/dev/null
buildah config --env PIP_BREAK_SYSTEM_PACKAGES=1 --cmd /bin/bash "$container"
buildah commit --quiet --rm "$container" "$image" >/dev/null

# Stale keys: their tarballs and images go.
find "$CACHE" -maxdepth 1 -name "standin-*.tar" ! -name "standin-$SUITE-$key.tar" -delete
buildah images --format '{{.Repository}}:{{.Tag}}' | grep "^$REPO:" | grep -v ":$key\$" \
  | xargs -r buildah rmi >/dev/null 2>&1 || true
echo "$image"
