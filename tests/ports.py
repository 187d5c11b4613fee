"""Ports for Ray instances that share one machine (a test session, its two-node cluster, a
benchmark, another session).

Ray Serve's HAProxy mode binds each replica's own HTTP and gRPC servers to the first free ports of
fixed ranges (30000-31000, 40000-41000) with SO_REUSEPORT. Two Ray instances on one machine then
bind the same ports and the kernel hands one instance's connections to the other's replicas: a
request answered by another app (seen as a 401: the other app has other keys). The fallback proxy
behind HAProxy binds fixed ports the same way (8500, 9500). Each instance gets a block of its own
below the ephemeral range, and fallback proxy ports of its own."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

BLOCK = 200  # replicas per instance, HTTP and gRPC each
LOW, HIGH = 10_000, 30_000  # below Linux's ephemeral ports (32768-60999)
ROOT = Path(__file__).resolve().parents[1]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in sockets]
    for s in sockets:
        s.close()
    return ports


def free_port() -> int:
    return free_ports(1)[0]


def wait_for_port(port: int, timeout_s: float = 10) -> None:
    """Until something listens on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout_s:g} s")


def serve_ports_env() -> dict[str, str]:
    """Serve's replica port ranges for one Ray instance (a block nobody is bound in) and its
    fallback proxy's ports."""
    bases = list(range(LOW, HIGH, 2 * BLOCK))
    random.shuffle(bases)
    for base in bases:
        if all(_bindable(port) for port in range(base, base + 2 * BLOCK, 10)):
            return {"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(base),
                    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(base + BLOCK),
                    "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(base + BLOCK),
                    "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(base + 2 * BLOCK),
                    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
                    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port())}
    raise RuntimeError(f"no free block of {2 * BLOCK} ports between {LOW} and {HIGH}")


def serve_session_env() -> dict[str, str]:
    """What a Ray Serve session on a shared machine (a test session, a benchmark) runs with where
    its environment does not say: no usage stats or auth tokens; the ingress scripts/run.sh uses,
    HAProxy, without splice() (scripts/haproxy says why); free ports for HAProxy's stats and
    metrics listeners (fixed by default) and for the replicas (above); and replicas reachable 1 s
    at shutdown for load balancers (30 s by default): none here."""
    return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(ROOT / "scripts" / "haproxy"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            **serve_ports_env(),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
