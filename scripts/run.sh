#!/usr/bin/env bash
# Serve configs/serve.yaml (or the config given) on :8001 behind Ray Serve's HAProxy ingress, which
# measured faster than the default Python proxy (docs/benchmarks.md). Stops cleanly on Ctrl-C/SIGTERM.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bash scripts/setup.sh || exit 1  # whatever set-up is missing (a second when nothing is)
export RAY_USAGE_STATS_ENABLED=${RAY_USAGE_STATS_ENABLED:-0}
export RAY_SERVE_ENABLE_HA_PROXY=${RAY_SERVE_ENABLE_HA_PROXY:-1}
# HAProxy without splice(), or a client that leaves a stream before its first token is never seen
# (scripts/haproxy says why).
export RAY_SERVE_HAPROXY_BINARY_PATH=${RAY_SERVE_HAPROXY_BINARY_PATH:-$PWD/scripts/haproxy}
# HAProxy needs about 2.5 file descriptors per connection (client, server, pipes) and exits at
# start when its maxconn asks for more than the hard limit (Ray's default 4096 wants ~10,300; buildah
# run and some runtimes give 1,024). Size maxconn to the limit this process really has.
if [ "$RAY_SERVE_ENABLE_HA_PROXY" = 1 ] && [ -z "${RAY_SERVE_HAPROXY_MAXCONN:-}" ]; then
  fds=$(ulimit -Hn)
  [ "$fds" = unlimited ] && fds=1048576
  maxconn=$(( (fds - 128) * 2 / 5 ))
  if [ "$maxconn" -ge 4096 ]; then
    export RAY_SERVE_HAPROXY_MAXCONN=4096
  elif [ "$maxconn" -ge 64 ]; then
    echo "run.sh: $fds file descriptors: HAProxy ingress limited to $maxconn connections" >&2
    export RAY_SERVE_HAPROXY_MAXCONN=$maxconn
  else
    echo "run.sh: WARNING: only $fds file descriptors, too few for HAProxy: falling back to" \
         "Serve's own proxy (slower; raise the limit with ulimit -n / --ulimit nofile)" >&2
    export RAY_SERVE_ENABLE_HA_PROXY=0
  fi
fi
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
