"""One real Ray + Serve for the whole test session, serving the real app on the packaged model."""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from router.http.auth import hash_key
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.fakes.catalog import CATALOG
from tests.fakes.otlp import OtlpReceiver
from tests.ports import free_port, serve_session_env
from tests.redis_server import RedisServer

for _variable, _value in serve_session_env().items():  # sessions side by side on one machine
    os.environ.setdefault(_variable, _value)

# The fixtures that start real Ray Serve: the session's (serve_root, and through it serve_url,
# lite_url, openai_client and every fixture built on them) and the deployment tests' cluster.
SERVE_FIXTURES = frozenset({"serve_root", "cluster_app"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `serve` every test that uses a Serve fixture, directly or through another fixture, so
    `-m "not serve"` runs the in-process suite alone and no test file has to remember the marker."""
    for item in items:
        if SERVE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.serve)


APP_NAME = "learnx"
OPENAI_KEY = "sk-test-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-test-0123456789"
# Router replicas inherit the environment of the process that starts Ray: keys come from env only.
os.environ["OPENAI_API_KEY"] = OPENAI_KEY
os.environ["ANTHROPIC_API_KEY"] = ANTHROPIC_KEY

# The key tests send everywhere (an admin key, so they may reset breakers and read all usage), a
# service key, and one with a small request rate.
API_KEY = "lx_test-service-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SERVICE_KEY = "lx_test-plain-service-key-0123456789"
LIMITED_KEY = "lx_test-limited-key-0123456789abcdef"
LIMITED_RPM = 5
# The Node client's own limited key (its retry-on-429 test drains it; no other test uses it).
CLIENT_LIMITED_KEY = "lx_test-client-limited-key-0123456789abcdef"
CLIENT_LIMITED_RPM = 20
# Users with budgets (USD per day), each used by one test of tests/router/http/test_api_budgets.py.
BUDGETS = {"budget-refuse": {"daily_usd": 0.000335, "on_exhausted": "refuse"},
           "budget-downgrade": {"daily_usd": 0.00002},
           # Mixed budgets of tests/router/http/test_api_budgets.py's concurrency test.
           **{f"budget-mix-{i}": {"daily_usd": 0.0005 * (i + 1)} if i % 3 else
              {"monthly_usd": 0.0004 * (i + 1), "on_exhausted": "refuse"} for i in range(10)}}

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
        "request_timeout_s": 40, "first_token_timeout_s": 10, "idle_timeout_s": 2,
        "max_retries": 1, "retry_backoff_s": 0.05,
        # A client that leaves cancels its generation at once, as these apps' tests expect (the
        # grace period's tests run apps of their own: tests/router/http/test_api_resume.py).
        "resume": {"grace_s": 0},
        # These tests assert which model answers; on a busy 2-core box the local model's expected
        # first token (1 thread) can pass a tier's limit and spill them to the fakes at random.
        # Spill-over has tests of its own (tests/router/services/test_spill_over.py, the real
        # engine in tests/deployments/llm/test_batching.py, benchmarks/classroom.py).
        "spill_over_wait_s": {"interactive": None, "background": None},
    },
    "embedder": {"ray_actor_options": {"num_cpus": 0.25}, "n_threads": 1, "max_texts": 256,
                 "batching": {"max_batch_size": 32, "batch_wait_timeout_s": 0.01},
                 "cache": {"key_prefix": f"learnx-test-{os.getpid()}:"}},
    "auth": {"api_keys": [{"id": "tests", "sha256": hash_key(API_KEY), "role": "admin"},
                          {"id": "service", "sha256": hash_key(SERVICE_KEY)},
                          {"id": "limited", "sha256": hash_key(LIMITED_KEY),
                           "requests_per_minute": LIMITED_RPM},
                          {"id": "client-limited", "sha256": hash_key(CLIENT_LIMITED_KEY),
                           "requests_per_minute": CLIENT_LIMITED_RPM}]},
    # High enough that only the tests about limits meet them.
    "rate_limits": {"user_requests_per_minute": 100_000, "user_tokens_per_minute": 100_000_000,
                    "key_requests_per_minute": 100_000, "key_tokens_per_minute": 100_000_000},
    "budgets": {"users": BUDGETS},
    "ledger": {"flush_interval_s": 0.05},
    "catalog": CATALOG,
}


def _postgres(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


POSTGRES_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this test session's own on the machine's PostgreSQL."""
    name = f"learnx_test_{os.getpid()}"
    _postgres(f"DROP DATABASE IF EXISTS {name}")
    _postgres(f"CREATE DATABASE {name}")
    yield POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    _postgres(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="function")  # on the test's own event loop, like its users
async def redis_client(own_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the tests' own Redis (give keys a per-test prefix)."""
    client = aioredis.from_url(own_redis.url)
    yield client
    await client.aclose()


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


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    """The tests' OTLP/HTTP receiver (tests/fakes/otlp.py), emptied before each test using it."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
def _fresh_fakes(request: pytest.FixtureRequest) -> None:
    """Each test starts with empty scripts and request logs and closed breakers (where in use)."""
    for name in ("fake_openai", "fake_anthropic", "otlp"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()
    for app in ("serve_url", "lite_url"):
        if app in request.fixturenames:
            url = request.getfixturevalue(app)
            httpx.post(f"{url}/health/providers/reset", headers=AUTH, timeout=10).raise_for_status()


def _hosted(fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> dict[str, Any]:
    return {"openai": {"base_url": f"{fake_openai.url}/v1"},
            "anthropic": {"base_url": fake_anthropic.url}}


@pytest.fixture(scope="session")
def serve_root(fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, own_redis: RedisServer,
               postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two applications on one real Serve: the full app at / (PostgreSQL ledger, Redis budgets and
    limits, auth on) and an API-only one at /lite (SQLite ledger, per-replica budgets and limits,
    auth off)."""
    import ray
    from ray import serve

    from deployments.app import build_app

    args = copy.deepcopy(TEST_ARGS)
    args["embedder"]["cache"].update(type="redis", redis_url=own_redis.url)
    args["router"]["providers"] = _hosted(fake_openai, fake_anthropic)
    args["redis_url"] = own_redis.url
    args["ledger"]["database_url"] = postgres_url
    # The session's tests share these apps and their content: a kept artifact (issue 23) would
    # answer a later test's request. tests/router/services/test_artifacts.py covers artifacts.
    args["artifacts"] = {"enabled": False}
    lite = {"artifacts": {"enabled": False},"enable_local_models": False,
            "embedder": {**copy.deepcopy(TEST_ARGS["embedder"]),
                         "ray_actor_options": {"num_cpus": 0}},
            "router": {**copy.deepcopy(TEST_ARGS["router"]),
                       "providers": _hosted(fake_openai, fake_anthropic)},
            "auth": {"enabled": False}, "catalog": CATALOG,
            "ledger": {"database_url": f"sqlite:///{tmp_path_factory.mktemp('ledger')}/usage.db",
                       "flush_interval_s": 0.05}}
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             _system_config={"metrics_report_interval_ms": 500},  # tests read metrics
             runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    serve.run(build_app(lite), name="learnx-lite", route_prefix="/lite")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(serve_root: str) -> str:
    return serve_root


@pytest.fixture(scope="session")
def lite_url(serve_root: str) -> str:
    return f"{serve_root}/lite"


@pytest.fixture(scope="session")
def openai_client(serve_url: str) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{serve_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
