"""One real two-node Ray cluster for the deployment tests: a head (router, embedder, Serve, dashboard,
metrics) and a worker that offers the `llm` resource the local model's replicas are pinned to.

The app is configs/api-only.yaml (the hosted profile) plus the packaged SmolLM2 on the worker, sized
for a 2-core machine; secrets and URLs come from the environment, as in the KubeRay manifests."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router.http.auth import hash_key
from tests.conftest import OPENAI_KEY
from tests.deploy.cluster import LocalCluster, free_ports, poll
from tests.fakes import FakeOpenAI
from tests.fakes.catalog import CATALOG
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
KEY = "lx_deploy-tests-key-0123456789abcdef"
LIMITED_KEY = "lx_deploy-limited-key-0123456789abcd"
HEADERS = {"Authorization": f"Bearer {KEY}"}
LLM = "LLMServer:smollm2-135m"
BUDGET_USERS = {"deploy-refused": {"daily_usd": 0, "on_exhausted": "refuse"},
                "deploy-downgraded": {"daily_usd": 0}}
# Scales to 2 router replicas when more than 2 requests are in flight per replica, and back soon.
ROUTER_AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
                      "upscale_delay_s": 0, "downscale_delay_s": 2, "look_back_period_s": 2}


@dataclass
class App:
    cluster: LocalCluster
    url: str
    port: int
    config: dict[str, Any]


def app_config(serve_port: int) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "configs" / "api-only.yaml").read_text())
    # Both nodes share this machine's loopback: one proxy, on the head, owns the port.
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": serve_port}
    args = config["applications"][0]["args"]
    args["enable_local_models"] = True
    args["local_models"] = [{
        "name": "smollm2-135m", "max_ongoing_requests": 8, "llama_cpp": {"n_ctx": 2048, "n_threads": 1},
        "ray_actor_options": {"num_cpus": 0, "resources": {"llm": 1}}}]
    args["router"].update(
        autoscaling_config=ROUTER_AUTOSCALING, first_token_timeout_s=5, idle_timeout_s=3,
        request_timeout_s=30, max_retries=1,
        resume={"grace_s": 0},  # a client that leaves through nginx cancels its generation at once
        breaker={"failure_threshold": 2, "cooldown_s": 1, "max_cooldown_s": 2},
        # OpenAI is played by the fake; Anthropic is not in this cluster (the suite's environment
        # holds a key for it, which the nodes inherit).
        providers={"anthropic": {"enabled": False}})
    args["embedder"].update(num_replicas=1, n_threads=1,
                            batching={"max_batch_size": 16, "batch_wait_timeout_s": 0.02})
    args["auth"] = {"api_keys": [{"id": "deploy-tests", "sha256": hash_key(KEY), "role": "admin"},
                                 {"id": "deploy-limited", "sha256": hash_key(LIMITED_KEY),
                                  "requests_per_minute": 1}]}
    args["budgets"] = {"users": copy.deepcopy(BUDGET_USERS)}
    args["ledger"] = {"flush_interval_s": 0.05}
    args["catalog"] = CATALOG  # the tests' models (tests/fakes/catalog.py), not the built-ins
    return config


@pytest.fixture(scope="package")
def cluster_app(fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    redis = RedisServer()
    redis.start()
    ledger = tmp_path_factory.mktemp("cluster-ledger") / "usage.db"
    cluster = LocalCluster({"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{fake_openai.url}/v1",
                            "REDIS_URL": redis.url, "DATABASE_URL": f"sqlite:///{ledger}"})
    (port,) = free_ports(1)
    try:
        cluster.start_head(num_cpus=2)
        # No CPUs: only what asks for the `llm` resource is ever scheduled on this node.
        cluster.start_worker(num_cpus=0, resources={"llm": 1})
        config = app_config(port)
        cluster.serve_deploy(config)
        poll(cluster.app_running, 120, "the app to be RUNNING")
        yield App(cluster, f"http://127.0.0.1:{port}", port, config)
    finally:
        cluster.stop(serve_port=port)
        redis.stop()


def chat(url: str, **body: Any) -> httpx.Response:
    payload = {"model": "smollm2-135m", "max_tokens": 8,
               "messages": [{"role": "user", "content": "Say hi."}], **body}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, headers=HEADERS, timeout=60)
