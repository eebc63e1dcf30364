#!/usr/bin/env bash
# Build the Dockerfile with buildah (no Docker engine, no registry needed): make image.
#
#   deploy/build-image.sh [IMAGE] [BASE]
#
# IMAGE (localhost/pneumo:latest) is built FROM BASE. BASE defaults to localhost/pneumo-base:bookworm,
# a Debian bookworm root filesystem made here by debootstrap from Debian's packages and imported
# once; set BASE=python:3.11.14-slim-bookworm where a registry is reachable. pip inside the build
# uses this machine's CA bundle and pip settings, mounted read-only (never copied into the image).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${1:-localhost/pneumo:latest}
BASE=${2:-localhost/pneumo-base:bookworm}
need() { command -v "$1" > /dev/null || { echo "error: $1 is missing: apt-get install $2" >&2; exit 2; }; }
need buildah buildah

# One build at a time on this machine (.ci/run starts one early; make test's then finds its layers).
exec 9> /tmp/pneumo-image-build.lock
flock 9
started=$(date +%s)
if [[ $BASE == localhost/pneumo-base:* ]] && ! buildah inspect --type image "$BASE" > /dev/null 2>&1; then
    need debootstrap debootstrap
    need podman podman
    root=$(mktemp -d /tmp/pneumo-base.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    echo "base: debootstrap bookworm into $root (about a minute)" >&2
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" > "$root.log" 2>&1 \
        || { tail -20 "$root.log" >&2; exit 1; }
    rm -f "$root.log"
    tar -C "$root" -c . | podman import --quiet - "$BASE" > /dev/null
    echo "base: $BASE imported" >&2
fi

mounts=()
for file in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
    [[ -f $file ]] && mounts+=(--volume "$file:$file:ro")
done
[[ -n ${PIP_INDEX_URL:-} ]] && mounts+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")

buildah bud --isolation chroot --format docker --layers --quiet "${mounts[@]}" \
    --build-arg "BASE=$BASE" --build-arg "GIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --tag "$IMAGE" . > /dev/null
size=$(buildah inspect --type image --format '{{.ImageSize}}' "$IMAGE" 2>/dev/null || true)
[[ -n $size && $size != 0 ]] || size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "built $IMAGE from $BASE in $(( $(date +%s) - started )) s, $(( size / 1000000 )) MB" >&2
