"""Budgets under concurrency: reserve before the call, settle after; an exhausted budget downgrades
to the local model or refuses with 402, as configured per user (tests/conftest.py BUDGETS)."""

from __future__ import annotations

import asyncio

import httpx

from core.generation import GenerationParams
from core.pricing import estimate
from models.catalog import HOSTED_MODELS
from router.fallback import prompt_estimate
from tests.conftest import AUTH, BUDGETS
from tests.fakes import Reply
from tests.router.test_api_accounting import ASK, records

MINI = next(c for c in HOSTED_MODELS if c.name == "gpt-4o-mini")


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
