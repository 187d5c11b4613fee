#!/usr/bin/env bash
# CI step: build the CPU image (scripts/image.sh: buildah on a local Debian base, no Docker daemon)
# and run it (tests/deploy/test_image.py: its own command and HEALTHCHECK, a chat completion and an
# embedding, under 1,024 file descriptors). Needs root, buildah, mmdebstrap and iproute2.
# Cost on the 2-core CI machine, shared (docs/operations.md, "Images"): the first build compiles
# llama.cpp (about 20 min); with its wheel in pip's cache mount a dependency change builds in 6-12 min;
# a code change reuses the dependency layer and builds in about 9 min (vfs copies and diffs the
# whole root for each layer); the run takes 1.5-2 min.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "image: installing ${missing[*]} with apt" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
image=$(bash scripts/image.sh)
LEARNX_IMAGE=$image bash scripts/test.sh tests/deploy/test_image.py -q -s
echo "image: step done in $((SECONDS - started)) s" >&2
