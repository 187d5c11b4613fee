#!/usr/bin/env bash
# The programs the deployment tests run for real (tests/deploy): nginx, Prometheus with promtool,
# Alertmanager's amtool, docker-compose (only `config`, no Docker daemon). Installs the missing ones with apt (Debian), once;
# returns at once when all are there.
set -uo pipefail
missing=()
command -v nginx >/dev/null || missing+=(nginx)
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing+=(prometheus)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
echo "tools: installing ${missing[*]} with apt (about a minute)" >&2
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
         --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "tools: could not install ${missing[*]}; the tests that need them will say so" >&2
  exit 0
fi
# The Debian packages start their services; the tests start their own, on free ports.
for service in nginx prometheus prometheus-alertmanager; do
  command -v systemctl >/dev/null && $sudo systemctl disable --now "$service" >/dev/null 2>&1
  command -v service >/dev/null && $sudo service "$service" stop >/dev/null 2>&1
done
exit 0
