"""A real multi-node Ray cluster on this machine, started the way an operator starts one (`ray start`
on each node, `serve deploy` to the head), with every port chosen free so that it collides neither
with Redis on 6379 nor with other Ray clusters running here.

Each node is a `ray start --block` process of our own: terminating it stops exactly that node's
processes (raylet, agents, workers), nothing else on the machine."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from tests.ports import free_ports, serve_ports_env

T = TypeVar("T")
BIN = Path(sys.executable).parent
# Push autoscaling metrics and Ray metrics often, so tests observe them in seconds, not minutes.
FAST_METRICS = {
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    # A stopped node goes at once instead of draining for up to 30 s (a crash, not a handover).
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}
SYSTEM_CONFIG = '{"metrics_report_interval_ms": 1000}'


def require(*programs: str) -> None:
    """The deployment tests run the real programs: a missing one is a failure that says what to do."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise AssertionError(f"{', '.join(missing)} not installed: run bash scripts/tools.sh")


def poll(check: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.25) -> T:
    """The first truthy result of `check()`, or AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(every_s)


class Node:
    """One `ray start --block` process: a Ray node and everything it runs."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        with log.open("ab") as out:
            # Its own process group: on a timeout the node's processes are ended with it, and only them.
            self.process = subprocess.Popen([str(BIN / "ray"), "start", "--block", *args], env=env,
                                            stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def stop(self, timeout_s: float = 30) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


class LocalCluster:
    """A head node (GCS, dashboard with the Serve REST API, metrics) and worker nodes."""

    def __init__(self, env: dict[str, str]):
        # Short: Ray's Unix socket paths live under it and must stay below ~107 characters.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="lx-ray-", dir="/tmp"))
        self.gcs_port, self.dashboard_port, haproxy_metrics, haproxy_stats = free_ports(4)
        # The HAProxy ingress's own ports are fixed by default (9101, 8404): others may hold them.
        self.env = {**os.environ, **FAST_METRICS, **env, **serve_ports_env(),
                    "RAY_SERVE_HAPROXY_METRICS_PORT": str(haproxy_metrics),
                    "RAY_SERVE_HAPROXY_STATS_PORT": str(haproxy_stats)}
        self.head: Node | None = None
        self.workers: list[Node] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def service_discovery_file(self) -> Path:
        """Ray's Prometheus file-based service discovery (every node's metrics endpoint)."""
        return self.temp_dir / "prom_metrics_service_discovery.json"

    def _node_ports(self) -> list[str]:
        nm, om, agent, agent_grpc, runtime_env, metrics = free_ports(6)
        return ["--node-manager-port", str(nm), "--object-manager-port", str(om),
                "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port",
                str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
                "--metrics-export-port", str(metrics), "--temp-dir", str(self.temp_dir)]

    def start_head(self, num_cpus: int) -> None:
        (client_port,) = free_ports(1)
        args = ["--head", "--port", str(self.gcs_port), "--ray-client-server-port", str(client_port),
                "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(self.dashboard_port), "--num-cpus", str(num_cpus),
                "--system-config", SYSTEM_CONFIG, *self._node_ports()]
        self.head = Node(args, self.env, self.temp_dir / "head.log")
        poll(self._dashboard_up, 60, "the head node's dashboard")

    def start_worker(self, num_cpus: int, resources: dict[str, float]) -> Node:
        before = {n.node_id for n in self.alive_nodes()}
        args = ["--address", self.address, "--num-cpus", str(num_cpus),
                "--resources", json.dumps(resources), *self._node_ports()]
        node = Node(args, self.env, self.temp_dir / f"worker-{len(self.workers)}.log")
        self.workers.append(node)
        try:
            poll(lambda: {n.node_id for n in self.alive_nodes()} - before, 60, "a worker to join")
        except AssertionError as error:
            raise AssertionError(f"{error}; its log ends:\n{node.log.read_text()[-3000:]}") from None
        return node

    def _dashboard_up(self) -> bool:
        try:
            return httpx.get(f"{self.dashboard}/api/version", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def alive_nodes(self) -> list[Any]:
        from ray.util.state import list_nodes

        try:
            # Filtering out dead nodes reads as "missing output" to the state API: it is not.
            return list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")],
                              raise_on_missing_output=False)
        except Exception:  # the dashboard is still starting
            return []

    def replicas(self, deployment: str) -> list[Any]:
        """The ALIVE replica actors of a deployment, with the node each runs on."""
        from ray.util.state import list_actors

        actors = list_actors(address=self.dashboard, filters=[("state", "=", "ALIVE")], limit=1000,
                             raise_on_missing_output=False)
        return [a for a in actors if a.class_name == f"ServeReplica:learnx:{deployment}"]

    def serve_deploy(self, config: dict[str, Any]) -> None:
        """What an operator runs: `serve deploy` (the Serve REST API on the head's dashboard)."""
        path = self.temp_dir / "serve-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        done = subprocess.run([str(BIN / "serve"), "deploy", str(path), "--address", self.dashboard],
                              env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"serve deploy failed: {done.stderr[-2000:]}"

    def serve_status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.dashboard}/api/serve/applications/", timeout=10)
        response.raise_for_status()
        return response.json()

    def running_replicas(self, deployment: str) -> int:
        app = self.serve_status()["applications"].get("learnx") or {}
        replicas = app.get("deployments", {}).get(deployment, {}).get("replicas", [])
        return sum(r["state"] == "RUNNING" for r in replicas)

    def app_running(self) -> bool:
        app = self.serve_status()["applications"].get("learnx") or {}
        return app.get("status") == "RUNNING"

    def stop(self, serve_port: int | None = None) -> None:
        for node in [*self.workers, *([self.head] if self.head else [])]:
            node.stop()
        if serve_port is not None:
            kill_listeners(serve_port)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def kill_listeners(port: int) -> None:
    """An HAProxy ingress can outlive its Ray node and keep the port: end it (ours: this port)."""
    listing = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    for pid in {int(p) for p in re.findall(r"pid=(\d+)", listing.stdout)}:
        with contextlib.suppress(OSError):
            if b"haproxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
