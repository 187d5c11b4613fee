#!/usr/bin/env bash
# Lint and type-check (CI runs this before the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/mypy
