"""One real Ray + Serve for the whole test session, serving the real app on the packaged model."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import FakeAnthropic, FakeOpenAI

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")  # the ingress scripts/run.sh uses

APP_NAME = "learnx"
OPENAI_KEY = "sk-test-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-test-0123456789"
# Router replicas inherit the environment of the process that starts Ray: keys come from env only.
os.environ["OPENAI_API_KEY"] = OPENAI_KEY
os.environ["ANTHROPIC_API_KEY"] = ANTHROPIC_KEY

# The embedded default, sized for a 2-core CI box: llama.cpp on 1 thread (2 threads collapse when
# the other core is busy), small context.
TEST_ARGS: dict[str, Any] = {
    "local_models": [{
        "name": "smollm2-135m",
        "max_ongoing_requests": 16,
        "ray_actor_options": {"num_cpus": 1},
        "llama_cpp": {"n_ctx": 2048, "n_threads": 1},
    }],
    "router": {
        "ray_actor_options": {"num_cpus": 0.25}, "max_body_bytes": 200_000,
        # Short limits so that faults resolve quickly; breakers are reset before each test.
        "request_timeout_s": 20, "first_token_timeout_s": 4, "idle_timeout_s": 2,
        "max_retries": 1, "retry_backoff_s": 0.05,
    },
    "embedder": {"ray_actor_options": {"num_cpus": 0.25}, "n_threads": 1, "max_texts": 256,
                 "batching": {"max_batch_size": 32, "batch_wait_timeout_s": 0.01},
                 "cache": {"key_prefix": f"learnx-test-{os.getpid()}:"}},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A Redis of the tests' own on a free port, so a test may stop and restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


@pytest.fixture(scope="session")
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh_fakes(request: pytest.FixtureRequest) -> None:
    """Each test starts with empty scripts and request logs and closed breakers (where in use)."""
    for name in ("fake_openai", "fake_anthropic"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()
    if "serve_url" in request.fixturenames:
        url = request.getfixturevalue("serve_url")
        httpx.post(f"{url}/health/providers/reset", timeout=10).raise_for_status()


@pytest.fixture(scope="session")
def serve_url(fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic,
              own_redis: RedisServer) -> Iterator[str]:
    import ray
    from ray import serve

    from deployments.app import build_app

    args = copy.deepcopy(TEST_ARGS)
    args["embedder"]["cache"].update(type="redis", redis_url=own_redis.url)
    args["router"]["providers"] = {"openai": {"base_url": f"{fake_openai.url}/v1"},
                                   "anthropic": {"base_url": fake_anthropic.url}}
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def openai_client(serve_url: str) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0, timeout=120)
