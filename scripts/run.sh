#!/usr/bin/env bash
# Serve configs/serve.yaml (or the config given) on :8001 behind Ray Serve's HAProxy ingress, which
# measured faster than the default Python proxy (docs/benchmarks.md). Stops cleanly on Ctrl-C/SIGTERM.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1  # whatever set-up is missing (a second when nothing is)
export RAY_USAGE_STATS_ENABLED=${RAY_USAGE_STATS_ENABLED:-0}
export RAY_SERVE_ENABLE_HA_PROXY=${RAY_SERVE_ENABLE_HA_PROXY:-1}
config=${1:-configs/serve.yaml}
port=$(.venv/bin/python -c "import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))['http_options']['port'])" "$config")

.venv/bin/serve run "$config" &
serve_pid=$!
trap 'kill -TERM "$serve_pid" 2>/dev/null' INT TERM
wait "$serve_pid"
wait "$serve_pid" 2>/dev/null
# haproxy has been seen outliving a SIGTERM'd `serve run` and keeping the port: make sure it is gone.
for pid in $(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
  if grep -q haproxy "/proc/$pid/cmdline" 2>/dev/null; then kill "$pid" 2>/dev/null; fi
done
