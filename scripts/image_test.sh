#!/usr/bin/env bash
# CI step: build the CPU image (scripts/image.sh: buildah on a local Debian base, no Docker daemon)
# and run it (tests/deploy/test_image.py: its own command and HEALTHCHECK, a chat completion and an
# embedding, under 1,024 file descriptors). Needs root, buildah, mmdebstrap and iproute2.
# Cost: the first build compiles llama.cpp (10-20 min on 2 busy cores); later ones reuse the layers
# kept in LEARNX_IMAGE_CACHE (a code change: the code layers and the run, about 3-4 min).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "image: installing ${missing[*]} with apt" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
image=$(bash scripts/image.sh)
LEARNX_IMAGE=$image bash scripts/test.sh tests/deploy/test_image.py -q -s
echo "image: step done in $((SECONDS - started)) s" >&2
