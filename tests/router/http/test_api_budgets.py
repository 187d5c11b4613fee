"""Budgets under concurrency: reserve before the call, settle after; an exhausted budget downgrades
to the local model or refuses with 402, as configured per user (tests/conftest.py BUDGETS)."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from core.generation import GenerationParams
from core.pricing import estimate, prompt_estimate
from tests.conftest import AUTH, BUDGETS
from tests.fakes import Fault, Reply
from tests.fakes.catalog import MODELS
from tests.router.http.test_api_accounting import ASK, records

MINI = next(c for c in MODELS if c.name == "gpt-4o-mini")


def one_request_estimate(max_tokens: int) -> tuple[int, float]:
    prompt = prompt_estimate(GenerationParams(ASK, max_tokens))
    return prompt, estimate(MINI, prompt, max_tokens)


async def test_concurrent_requests_cannot_overrun_a_budget(serve_url, fake_openai) -> None:
    who, budget = "budget-refuse", BUDGETS["budget-refuse"]["daily_usd"]
    prompt, each = one_request_estimate(50)
    # Every answer costs exactly its estimate, so the budget is worth budget / each requests.
    fake_openai.enqueue(*[Reply(prompt_tokens=prompt, completion_tokens=50)] * 100)
    body = {"model": "gpt-4o-mini", "messages": ASK, "max_tokens": 50, "user": who}
    async with httpx.AsyncClient(headers=AUTH, timeout=120) as client:
        responses = await asyncio.gather(*(
            client.post(f"{serve_url}/v1/chat/completions", json=body) for _ in range(100)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402}, statuses
    assert statuses.count(200) == int(budget / each) == 10  # reservations are atomic: no more, no less
    refused = next(r.json()["error"] for r in responses if r.status_code == 402)
    assert refused["type"] == "budget_exceeded" and who in refused["message"]
    ledger = records(serve_url, who, expect=100)
    assert len(ledger) == 100  # refused requests are recorded too
    spent = sum(r["cost_usd"] for r in ledger)
    assert spent <= budget + each
    assert spent == sum(r["cost_usd"] for r in ledger if r["status"] == 200)
    report = httpx.get(f"{serve_url}/api/v1/ai/usage", params={"user_id": who}, headers=AUTH,
                       timeout=30).json()
    assert report["budget"]["daily_spent_usd"] <= budget + each
    # Hosted embeddings are refused as well (never downgraded: vectors must not mix).
    response = httpx.post(f"{serve_url}/v1/embeddings", headers=AUTH, timeout=30, json={
        "input": ["x " * 3000], "model": "text-embedding-3-small", "user": who})
    assert response.status_code == 402, response.text


def test_an_exhausted_budget_downgrades_to_the_local_model(serve_url, fake_openai) -> None:
    who, budget = "budget-downgrade", BUDGETS["budget-downgrade"]["daily_usd"]
    prompt, each = one_request_estimate(8)
    fake_openai.enqueue(*[Reply(prompt_tokens=prompt, completion_tokens=8)] * 6)
    routes = []
    for _ in range(int(budget / each) + 2):
        response = httpx.post(f"{serve_url}/v1/chat/completions", headers=AUTH, timeout=60, json={
            "model": "small", "messages": ASK, "max_tokens": 8, "user": who,
            "preferred_providers": ["openai"]})
        assert response.status_code == 200, response.text
        routes.append(response.json()["route"])
    providers = [r["provider"] for r in routes]
    assert providers[0] == "openai" and providers[-1] == "local", providers
    assert providers == sorted(providers, key=lambda p: p == "local")  # hosted, then local only
    assert "budget exhausted" in routes[-1]["reason"]
    spent = sum(r["cost_usd"] for r in records(serve_url, who, expect=len(routes)))
    assert spent <= budget + each


async def test_no_user_spends_past_their_budget_through_failures_fallbacks_and_retries(
        serve_url, fake_openai, fake_anthropic) -> None:
    """200 concurrent requests from 10 users with mixed budgets, on providers that fail 30 % of
    attempts (so fallbacks and retries happen) and cut some streams mid-answer (so continuations
    happen): no user's ledger spend exceeds their budget, the budget counters agree with the
    ledger, and the ledger holds one record per response the clients saw."""
    users = [f"budget-mix-{i}" for i in range(10)]
    fake_openai.fail_rate = fake_anthropic.fail_rate = 0.3
    fake_openai.enqueue(*[Fault(cut_after=2)] * 10)
    try:
        async with httpx.AsyncClient(headers=AUTH, timeout=120) as client:
            responses = await asyncio.gather(*(
                client.post(f"{serve_url}/v1/chat/completions", json={
                    "model": "large", "messages": ASK, "max_tokens": 16, "user": users[n % 10],
                    "stream": n % 2 == 1, "preferred_providers": ["openai", "anthropic"]})
                for n in range(200)))
    finally:
        fake_openai.fail_rate = fake_anthropic.fail_rate = 0.0
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402, 503}, statuses
    assert statuses.count(200) > 50 and statuses.count(402) > 0, statuses
    paths = [r.json()["route"].get("path", []) for r in responses[::2] if r.status_code == 200]
    assert any(len(path) > 1 for path in paths)  # fallbacks happened
    for who in users:
        budget = BUDGETS[who].get("daily_usd") or BUDGETS[who]["monthly_usd"]
        ledger = records(serve_url, who, expect=20)
        assert len(ledger) == 20, who  # one record per response, none lost, none doubled
        spent = sum(r["cost_usd"] for r in ledger)
        assert spent <= budget, (who, spent, budget)
        period = "daily" if "daily_usd" in BUDGETS[who] else "monthly"
        status = settled_budget(serve_url, who, period)
        assert status[f"{period}_spent_usd"] == pytest.approx(spent, abs=1e-8), who


def settled_budget(url: str, who: str, period: str) -> dict[str, float]:
    """The user's budget once every hold is settled (settlements run just after the response)."""
    for _ in range(50):
        status: dict[str, float] = httpx.get(f"{url}/api/v1/ai/usage", params={"user_id": who},
                                             headers=AUTH, timeout=30).json()["budget"]
        if status[f"{period}_held_usd"] == 0:
            return status
        time.sleep(0.1)
    raise AssertionError(f"{who}'s holds were never settled: {status}")


async def test_a_classs_learners_together_cannot_overrun_its_budget(serve_url, fake_openai) -> None:
    """100 concurrent requests of 5 learners of one class whose budget (set through the admin API,
    kept in Redis) is worth 10 of them: exactly 10 are served (no overrun, no false refusal), every
    refusal names the group's budget or the learner's share, and the ledger agrees."""
    group = f"class-{uuid.uuid4().hex[:8]}"
    learners = [f"{group}-learner-{n}" for n in range(5)]
    prompt, each = one_request_estimate(50)
    level = f"{serve_url}/api/v1/ai/budgets/tests/groups/{group}"
    async with httpx.AsyncClient(headers=AUTH, timeout=120) as client:
        response = await client.put(level, json={
            "usd": 10 * each + each / 2, "period": "day", "on_exhausted": "refuse",
            "learner_cap_usd": 4 * each + each / 2})
        assert response.status_code == 200, response.text
        fake_openai.enqueue(*[Reply(prompt_tokens=prompt, completion_tokens=50)] * 100)
        body = {"model": "gpt-4o-mini", "messages": ASK, "max_tokens": 50, "group": group}
        responses = await asyncio.gather(*(
            client.post(f"{serve_url}/v1/chat/completions", json={**body, "user": learners[n % 5]})
            for n in range(100)))
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 10 and statuses.count(402) == 90, statuses
        assert {r.json()["error"]["level"] for r in responses if r.status_code == 402} <= {
            "group", "learner_share"}
        served = [sum(r["status"] == 200 for r in records(serve_url, who, expect=20))
                  for who in learners]
        assert sum(served) == 10 and max(served) <= 4, served  # each within their cap
        report = (await client.get(f"{serve_url}/api/v1/ai/usage", params={"group": group})).json()
        assert report["totals"]["requests"] == 100
        assert report["totals"]["cost_usd"] == pytest.approx(10 * each, abs=1e-8)
        await client.delete(level)
