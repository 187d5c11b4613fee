"""The meter in process: every request leaves exactly one ledger record with its outcome, status,
tokens and cost; budgets reserve, downgrade or refuse; rate limits refuse with Retry-After."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from core.errors import ProviderError
from core.generation import TokenUsage
from tests.fakes.inprocess import InProcess, config, start
from tests.fakes.scripted import Say

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest_asyncio.fixture(loop_scope="function")
async def limited(tmp_path: Any):
    running = start(config(
        tmp_path,
        budgets={"users": {"thrifty": {"daily_usd": 0.000001},
                           "strict": {"daily_usd": 0.000001, "on_exhausted": "refuse"}}},
        rate_limits={"user_requests_per_minute": 2}))
    yield running
    await running.close()


async def test_a_chat_request_leaves_one_record_with_tokens_and_cost(api: InProcess) -> None:
    api.openai.enqueue(Say("one two three", usage=None))
    await api.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO,
                                            "user": "ada"}, headers={"X-Request-Id": "req-1"})
    (record,) = await api.records("ada")
    assert record["request_id"] == "req-1" and record["api_key_id"] == "backend"
    assert (record["provider"], record["model"]) == ("openai", "gpt-4o-mini")
    assert (record["input_tokens"], record["output_tokens"]) == (2, 3)
    assert record["cost_usd"] == pytest.approx((2 * 0.15 + 3 * 0.60) / 1e6)
    assert (record["outcome"], record["status"], record["usage_source"]) == \
        ("success", 200, "provider")


async def test_a_failed_request_is_recorded_with_its_status(api: InProcess) -> None:
    down = ProviderError("HTTP 500", provider="x", model="y", upstream_status=500)
    api.openai.enqueue(down, down)
    api.anthropic.enqueue(down, down)
    response = await api.post("/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO,
                                                       "user": "bob"})
    assert response.status_code == 503
    (record,) = await api.records("bob")
    assert (record["outcome"], record["status"]) == ("error", 503)
    assert record["error_type"] == "service_unavailable"
    assert record["fallback_path"] is not None


async def test_a_failed_attempt_the_provider_billed_is_counted(api: InProcess) -> None:
    api.openai.enqueue(ProviderError("stream cut", provider="openai", model="gpt-4o-mini",
                                     usage=TokenUsage(40, 0)))  # reported the prompt, then failed
    api.anthropic.enqueue(Say("one two", usage=TokenUsage(30, 2)))
    response = await api.post("/v1/chat/completions", {
        "model": "small", "messages": HELLO, "user": "billed",
        "preferred_providers": ["openai", "anthropic"]})
    assert response.status_code == 200, response.text
    (record,) = await api.records("billed")
    assert (record["input_tokens"], record["output_tokens"]) == (40 + 30, 2)
    assert record["cost_usd"] == pytest.approx(
        (40 * 0.15 + 30 * 0.80 + 2 * 4.00) / 1e6)


async def test_local_tokens_count_as_savings_against_the_cheapest_hosted_model(
        api: InProcess) -> None:
    await api.post("/v1/chat/completions", {"model": "smollm2-135m", "messages": HELLO,
                                            "user": "cy"})
    (record,) = await api.records("cy")
    assert record["cost_usd"] == 0
    assert record["savings_usd"] == pytest.approx((2 * 0.15 + 6 * 0.60) / 1e6)


async def test_an_embedding_request_records_its_cache_hits(api: InProcess) -> None:
    for _ in range(2):
        await api.post("/api/v1/ai/embeddings", {"texts": ["a", "b"], "user_id": "dee"})
    records = await api.records("dee")
    assert [r["cache_hits"] for r in records] == [0, 2]
    assert {r["operation"] for r in records} == {"embeddings"}


async def test_an_exhausted_budget_downgrades_to_the_free_model(limited: InProcess) -> None:
    response = await limited.post("/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": HELLO, "user": "thrifty"})
    route = response.json()["route"]
    assert route["provider"] == "local" and "budget exhausted" in route["reason"]


async def test_an_exhausted_budget_refuses_when_told_to(limited: InProcess) -> None:
    response = await limited.post("/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": HELLO, "user": "strict"})
    assert response.status_code == 402
    (record,) = await limited.records("strict")
    assert (record["outcome"], record["status"]) == ("error", 402)


async def test_a_user_over_the_rate_limit_gets_429_with_retry_after(limited: InProcess) -> None:
    statuses = []
    for _ in range(3):
        response = await limited.post("/v1/chat/completions", {
            "model": "small", "messages": HELLO, "user": "eager"})
        statuses.append(response.status_code)
    assert statuses == [200, 200, 429]
    assert int(response.headers["retry-after"]) >= 1
    assert [r["status"] for r in await limited.records("eager")] == [200, 200, 429]


async def test_a_restarted_replica_counts_what_the_ledger_says_was_spent_today(tmp_path: Any) -> None:
    """Budgets in memory start empty: they are seeded from the ledger before their first use."""
    budgets = {"users": {"ada": {"daily_usd": 0.001, "on_exhausted": "refuse"}}}
    body = {"model": "gpt-4o-mini", "messages": HELLO, "user": "ada", "max_tokens": 500}
    first = start(config(tmp_path, budgets=budgets))
    first.openai.enqueue(Say("a long answer", usage=TokenUsage(1_000, 1_000)))  # $0.00075
    try:
        assert (await first.post("/v1/chat/completions", body)).status_code == 200
    finally:
        await first.close()
    again = start(config(tmp_path, budgets=budgets))
    try:
        usage = (await again.client.get("/api/v1/ai/usage", params={"user_id": "ada"})).json()
        refused = await again.post("/v1/chat/completions", body)  # ~$0.0003 more does not fit
    finally:
        await again.close()
    assert usage["budget"]["daily_spent_usd"] == pytest.approx(0.00075)
    assert refused.status_code == 402, refused.text
