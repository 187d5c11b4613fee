#!/usr/bin/env bash
# The whole test suite (GPU tests skip themselves without a GPU), after whatever set-up is missing:
# the .venv (scripts/setup.sh), Redis and PostgreSQL (scripts/services.sh), and nginx, Prometheus
# and docker-compose for the deployment tests (scripts/tools.sh). Each returns at once when done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
bash scripts/tools.sh
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
exec .venv/bin/python -m pytest "$@"
