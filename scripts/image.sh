#!/usr/bin/env bash
# Build the CPU image (deploy/Dockerfile) without a Docker daemon: buildah (vfs storage, chroot
# isolation) on a Debian bookworm base that mmdebstrap makes from Debian's packages, since no image
# registry is reachable from CI. Prints the image name. Storage and the base live outside the clone
# (LEARNX_IMAGE_CACHE, default /var/cache/learnx) and are reused: the base is rebuilt once a week
# (security updates), the image's layers whenever their inputs change.
#   bash scripts/image.sh            # -> learnx-ai:ci
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${LEARNX_IMAGE_CACHE:-/var/cache/learnx}
IMAGE=${LEARNX_IMAGE:-learnx-ai:ci}
PACKAGES=python3,python3-venv,ca-certificates
LIMIT_GB=${LEARNX_IMAGE_CACHE_GB:-40}
buildah() { command buildah --storage-driver vfs --root "$CACHE/storage" --runroot "$CACHE/run" "$@"; }
step() { echo "image: $*" >&2; }
mkdir -p "$CACHE"
# vfs copies the whole root filesystem for every layer (about 1.7 GB each here): past the limit,
# start the layer cache afresh (the llama.cpp wheel stays in pip's cache mount, in /var/tmp).
if [ -d "$CACHE/storage" ] && [ "$(du -s --block-size=1G "$CACHE/storage" | cut -f1)" -gt "$LIMIT_GB" ]; then
  step "layer cache over $LIMIT_GB GB: emptying it"
  buildah rm --all >/dev/null 2>&1 || true
  buildah rmi --all --force >/dev/null 2>&1 || true
fi
# Working containers a killed build left behind.
buildah rm --all >/dev/null 2>&1 || true

key=$( (date +%G-%V; echo "$PACKAGES") | sha256sum | cut -c1-12)
base=localhost/learnx-base:bookworm-$key
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  step "making the base $base with mmdebstrap (about a minute)"
  rootfs=$CACHE/bookworm-$key.tar
  mmdebstrap --quiet --variant=minbase --include="$PACKAGES" bookworm "$rootfs"
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$rootfs" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
  buildah commit --quiet --rm "$ctr" "$base" >/dev/null
  rm -f "$rootfs"
fi

step "building $IMAGE on $base"
started=$SECONDS
# --format docker keeps HEALTHCHECK (OCI images have no field for it). pip inside the build trusts
# the machine's CA bundle, as pip outside it does.
buildah bud --quiet --isolation chroot --layers --format docker \
  --build-arg BASE_IMAGE="$base" \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  -f deploy/Dockerfile -t "$IMAGE" . >&2
step "built in $((SECONDS - started)) s"
echo "$IMAGE"
