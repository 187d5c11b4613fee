"""Shared benchmark helper: run the real app under Ray Serve on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.ports import free_port, serve_session_env

for _variable, _value in serve_session_env().items():  # beside a test session or a service
    os.environ.setdefault(_variable, _value)
# Ray starts its workers (Serve's replicas among them) at nice 15 (`worker_niceness` in Ray's
# src/ray/common/ray_config_def.h, set by RAY_worker_niceness): on a box shared with other work,
# the replica measured would get the CPU only when nothing else wants it. At 0 it competes as an
# equal, like the benchmark's own client.
os.environ.setdefault("RAY_worker_niceness", "0")


def shipped_app() -> dict[str, Any]:
    """configs/serve.yaml's application arguments, as `serve run` (scripts/run.sh) gets them."""
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/serve.yaml").read_text())
    return dict(config["applications"][0]["args"])


@contextlib.contextmanager
def served(args: dict[str, Any], more: dict[str, dict[str, Any]] | None = None) -> Iterator[str]:
    """Serve `args` at / (and each of `more` at its route prefix). Auth is off unless args say."""
    import ray
    from ray import serve

    from deployments.app import build_app

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        apps = {"/": args, **(more or {})}
        for n, (prefix, app_args) in enumerate(apps.items()):
            serve.run(build_app({"auth": {"enabled": False}, **app_args}), name=f"learnx-{n}",
                      route_prefix=prefix)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
