"""Rate limits and budgets through the API, in process: the embedded default's limits, token limits
under concurrency, and what callers see while the shared-state store (Redis) is down or hung."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from core.config import AppConfig
from core.generation import TokenUsage
from router.usage.budget_stores import BudgetStore, Counter, Hold, MemoryBudgetStore, Usage
from router.usage.budgets import Budgets
from router.usage.sharedstate import TIMEOUT_S, StateUnavailable
from tests.conftest import RedisServer, free_port
from tests.fakes.inprocess import config, start
from tests.fakes.scripted import Say

HELLO = [{"role": "user", "content": "Hello there"}]
SERVE_YAML = Path(__file__).resolve().parents[3] / "configs" / "serve.yaml"
BUDGETED = {"users": {"ada": {"daily_usd": 1.0}}}


def serve_yaml_config(tmp_path: Path) -> AppConfig:
    (app,) = yaml.safe_load(SERVE_YAML.read_text())["applications"]
    args = {**app["args"], "ledger": {"database_url": f"sqlite:///{tmp_path}/usage.db"}}
    return AppConfig.model_validate(args)


async def test_the_embedded_default_serves_a_backend_that_sends_no_user_id(tmp_path: Path) -> None:
    """600 requests at concurrency 32 without `user`: none refused (they used to share one
    `anonymous` bucket of 120 requests a minute)."""
    api = start(serve_yaml_config(tmp_path), hosted=False)
    statuses: list[int] = []
    gate = asyncio.Semaphore(32)

    async def one() -> None:
        async with gate:
            response = await api.post("/v1/chat/completions",
                                       {"model": "smollm2-135m", "messages": HELLO, "max_tokens": 8})
            statuses.append(response.status_code)

    try:
        await asyncio.gather(*(one() for _ in range(600)))
    finally:
        await api.close()
    assert statuses.count(429) == 0
    assert statuses == [200] * 600


async def test_identified_users_keep_their_own_limits(tmp_path: Path) -> None:
    api = start(config(tmp_path, rate_limits={"user_requests_per_minute": 2}))
    try:
        body = {"model": "small", "messages": HELLO}
        named = [(await api.post("/v1/chat/completions", {**body, "user": "ada"})).status_code
                 for _ in range(3)]
        unnamed = [(await api.post("/v1/chat/completions", body)).status_code for _ in range(5)]
    finally:
        await api.close()
    assert named == [200, 200, 429]
    assert unnamed == [200] * 5


async def test_concurrent_large_requests_cannot_overrun_a_token_limit(tmp_path: Path) -> None:
    """Each request reserves its prompt and max_tokens on arrival: 120 concurrent requests of
    ~1,000 tokens against 10,000 tokens a minute let 9 in, not all of them. Each answer uses all
    of its max_tokens, so one that finishes early gives none of its reservation back."""
    api = start(config(tmp_path, rate_limits={"user_tokens_per_minute": 10_000}))
    api.openai.default = Say(usage=TokenUsage(6, 1_000))
    body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 1_000, "user": "ada"}
    try:
        responses = await asyncio.gather(*(api.post("/v1/chat/completions", body)
                                           for _ in range(120)))
    finally:
        await api.close()
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 9, statuses  # 1,000 + the prompt's ~6 tokens each
    assert set(statuses) == {200, 429}
    refused = next(r for r in responses if r.status_code == 429)
    assert "user 'ada': 10000 tokens per minute" in refused.json()["error"]["message"]


async def test_an_unreachable_budget_store_serves_budgeted_requests_with_a_free_model(
        tmp_path: Path) -> None:
    """Failing closed on money, not on the learner: what a free local model can serve, it serves
    (the route says why); only what none can serve is a 503."""
    api = start(config(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0", budgets=BUDGETED,
                       rate_limits={"user_requests_per_minute": 1}))
    try:
        paid = await api.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO,
                                                       "user": "ada"})
        free = await api.post("/v1/chat/completions", {"model": "smollm2-135m", "messages": HELLO,
                                                       "user": "ada"})
        large = await api.post("/v1/chat/completions", {"model": "large", "messages": HELLO,
                                                        "user": "ada"})
        unbudgeted = [(await api.post("/v1/chat/completions", {
            "model": "gpt-4o-mini", "messages": HELLO, "user": "bob"})).status_code for _ in range(3)]
        usage = await api.client.get("/api/v1/ai/usage", params={"user_id": "ada"})
        records = await api.records("ada")
    finally:
        await api.close()
    assert paid.status_code == 200, paid.text
    assert paid.headers["x-learnx-route"] == "local/smollm2-135m"
    assert paid.json()["route"]["reason"].startswith("budget store unavailable")
    assert free.status_code == 200  # a free model needs no budget; rate limits let it in
    assert large.status_code == 503, large.text  # no free model serves the large tier here
    error = large.json()["error"]
    assert (error["type"], error["code"]) == ("service_unavailable", "budget_store_unavailable")
    assert "budget" in error["message"] and int(large.headers["retry-after"]) >= 1
    assert unbudgeted == [200] * 3  # no budget to check; the rate limit (1 a minute) fails open
    assert usage.status_code == 503 and usage.json()["error"]["code"] == "budget_store_unavailable"
    assert [r["status"] for r in records] == [200, 200, 503]
    assert [r["provider"] for r in records[:2]] == ["local", "local"]


async def test_a_hung_redis_costs_a_few_requests_its_timeout_then_nothing(
        tmp_path: Path, own_redis: RedisServer) -> None:
    """Redis paused (SIGSTOP): a few calls wait out the 0.5 s timeout, then the breaker answers at
    once; budgeted requests are served by the free local model, the others as asked."""
    api = start(config(tmp_path, redis_url=own_redis.url, budgets=BUDGETED,
                       rate_limits={"user_requests_per_minute": 1_000}))
    body = {"model": "gpt-4o-mini", "messages": HELLO}
    try:
        assert (await api.post("/v1/chat/completions", {**body, "user": "ada"})).status_code == 200
        own_redis.pause()
        try:
            timings = []
            for user in ["bob", "ada"] * 20:
                started = time.perf_counter()
                response = await api.post("/v1/chat/completions", {**body, "user": user})
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                assert response.headers["x-learnx-route"] == (
                    "local/smollm2-135m" if user == "ada" else "openai/gpt-4o-mini")
        finally:
            own_redis.resume()
    finally:
        await api.close()
    assert sum(timings) < 3 * TIMEOUT_S + 2.0, timings  # three timeouts, then milliseconds each
    assert sorted(timings)[-4] < 0.1, timings


class SettlementFails:
    """A budget store whose settlements fail (Redis went away after the hold was taken)."""

    def __init__(self, store: BudgetStore):
        self.store = store

    async def take(self, hold: Hold, ttl_s: float) -> tuple[Counter, ...]:
        return await self.store.take(hold, ttl_s)

    async def settle(self, hold: Hold, spent: int, ttl_s: float) -> None:
        raise StateUnavailable("down", 0.1)

    async def usage(self, counters: Sequence[Counter]) -> list[Usage]:
        return await self.store.usage(counters)


async def test_a_failed_budget_settlement_still_settles_the_token_limits(tmp_path: Path) -> None:
    api = start(config(tmp_path, budgets=BUDGETED, rate_limits={"user_tokens_per_minute": 1_000}))
    accounting = api.services.accounting
    accounting.budgets = Budgets(api.services.config.budgets, SettlementFails(MemoryBudgetStore()),
                                 hold_ttl_s=0.5)
    body = {"model": "gpt-4o-mini", "messages": HELLO, "user": "ada"}
    try:
        first = await api.post("/v1/chat/completions", {**body, "max_tokens": 600})
        await accounting.drain()
        # The 600 tokens reserved were settled to the ~10 really used: 900 more fit.
        second = await api.post("/v1/chat/completions", {**body, "max_tokens": 900})
    finally:
        await api.close()
    assert (first.status_code, second.status_code) == (200, 200), second.text
