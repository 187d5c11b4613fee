"""Money that matches the invoice, through the whole API in process: the real adapters on the fakes
that cache as the providers do; what the response's `usage`, the ledger, the usage API and the
budget count equals what the fake bills, token for token and to the dollar."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest_asyncio

from core.config import HostedProviderConfig
from core.generation import GenerationParams, TokenUsage
from core.pricing import cost, estimate, prompt_estimate
from router.run.providers.anthropic import AnthropicProvider
from router.run.providers.openai import OpenAIProvider
from router.usage.budgets import Scope
from tests.fakes import FakeAnthropic, FakeOpenAI, Reply
from tests.fakes.caching import InvoiceLine
from tests.fakes.catalog import MODELS
from tests.fakes.inprocess import InProcess, config, start

LESSON = " ".join(f"lesson{i}" for i in range(1500))
QUESTIONS = ["What is a cell?", "Why are leaves green?", "How do roots drink?"]


def invoice_usd(app: InProcess, lines: list[InvoiceLine]) -> float:
    cards = {c.name: c for c in app.services.chat.catalog()}
    return sum(cost(cards[line.model], TokenUsage(
        line.input + line.cache_read + line.cache_write_5m + line.cache_write_1h, line.output,
        cached_tokens=line.cache_read, cache_write_tokens=line.cache_write_5m + line.cache_write_1h,
        cache_write_1h_tokens=line.cache_write_1h)) for line in lines)


@pytest_asyncio.fixture(loop_scope="function")
async def app(tmp_path: Any, fake_openai: FakeOpenAI,
              fake_anthropic: FakeAnthropic) -> AsyncIterator[InProcess]:
    openai_ = OpenAIProvider.from_env(HostedProviderConfig(base_url=f"{fake_openai.url}/v1"),
                                      {"OPENAI_API_KEY": "k"})
    anthropic_ = AnthropicProvider.from_env(HostedProviderConfig(base_url=fake_anthropic.url),
                                            {"ANTHROPIC_API_KEY": "k"})
    assert openai_ is not None and anthropic_ is not None
    budgets = {"users": {"learner-1": {"daily_usd": 5.0}}}
    slow_is_fine = {"first_token_timeout_s": 30, "idle_timeout_s": 30, "request_timeout_s": 60}
    started = start(config(tmp_path, budgets=budgets, router=slow_is_fine),
                    providers={"openai": openai_, "anthropic": anthropic_})
    yield started
    await started.close()


async def ask(app: InProcess, model: str, question: str, stream: bool) -> dict[str, Any]:
    body = {"model": model, "user": "learner-1", "max_tokens": 50, "stream": stream,
            "messages": [{"role": "system", "content": LESSON},
                         {"role": "user", "content": question}]}
    if not stream:
        response = await app.post("/v1/chat/completions", body)
        assert response.status_code == 200, response.text
        usage: dict[str, Any] = response.json()["usage"]
        return usage
    body["stream_options"] = {"include_usage": True}
    async with app.client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line.startswith("data: {")]
    last: dict[str, Any] = json.loads(lines[-1][6:])["usage"]
    return last


async def test_ledger_usage_api_and_budget_equal_the_providers_invoice(
        app: InProcess, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> None:
    usages = []
    for index, question in enumerate(QUESTIONS):
        for model in ("claude-3-5-sonnet-latest", "gpt-4o-mini"):
            usages.append(await ask(app, model, question, stream=index % 2 == 1))
    sonnet = usages[0::2]
    assert [u["prompt_tokens_details"]["cache_write_tokens"] for u in sonnet] == [1500, 0, 0]
    assert [u["prompt_tokens_details"]["cached_tokens"] for u in sonnet] == [0, 1500, 1500]
    assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages[1::2]] == [0, 1408, 1408]

    lines = [*fake_anthropic.invoice, *fake_openai.invoice]
    records = await app.records("learner-1")
    assert [r["model"] for r in records] == ["claude-3-5-sonnet-latest", "gpt-4o-mini"] * 3
    assert sum(r["cached_input_tokens"] for r in records) == sum(x.cache_read for x in lines)
    assert sum(r["cache_write_tokens"] for r in records) == sum(
        x.cache_write_5m + x.cache_write_1h for x in lines)
    assert sum(r["input_tokens"] for r in records) == sum(
        x.input + x.cache_read + x.cache_write_5m + x.cache_write_1h for x in lines)
    assert sum(r["output_tokens"] for r in records) == sum(x.output for x in lines)
    billed = invoice_usd(app, lines)
    assert abs(sum(r["cost_usd"] for r in records) - billed) < 1e-9

    report = (await app.client.get("/api/v1/ai/usage", params={"user_id": "learner-1"})).json()
    totals = report["totals"]
    assert totals["cached_input_tokens"] == 1500 * 2 + 1408 * 2
    assert totals["cache_write_tokens"] == 1500
    assert abs(totals["cost_usd"] - billed) < 1e-8
    await app.services.accounting.drain()
    status = await app.services.accounting.budget_status(Scope("backend", "learner-1"))
    assert status is not None and abs(status["daily_spent_usd"] - billed) < 1e-8


async def test_a_model_declared_in_the_config_is_served_and_priced(
        tmp_path: Any, fake_anthropic: FakeAnthropic) -> None:
    card = {"name": "claude-sonnet-4-5", "provider": "anthropic", "tier": "large",
            "context_window": 200_000, "input_per_million": 3.0, "cached_input_per_million": 0.3,
            "cache_write_per_million": 3.75, "cache_write_1h_per_million": 6.0,
            "output_per_million": 15.0, "tool_calling": "auto"}
    provider = AnthropicProvider.from_env(HostedProviderConfig(base_url=fake_anthropic.url),
                                          {"ANTHROPIC_API_KEY": "k"})
    app = start(config(tmp_path, catalog={"models": [card]}), providers={"anthropic": provider})
    try:
        response = await app.post("/v1/chat/completions", {
            "model": "claude-sonnet-4-5", "max_tokens": 5,
            "messages": [{"role": "user", "content": "Hi there"}]})
        assert response.status_code == 200, response.text
        # 2 prompt tokens at $3, 11 output tokens at $15 per million
        assert response.json()["route"]["cost_usd"] == 0.000171
        assert fake_anthropic.requests[-1].body["model"] == "claude-sonnet-4-5"
    finally:
        await app.close()


async def test_an_unknown_model_is_refused_saying_how_to_add_it(app: InProcess) -> None:
    response = await app.post("/v1/chat/completions", {
        "model": "gpt-9", "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 404  # OpenAI's status for model_not_found
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and "catalog.models" in error["message"]


async def test_reservations_price_the_prefix_at_the_cached_rate_once_the_cache_holds_it(
        app: InProcess) -> None:
    chat, card = app.services.chat, next(c for c in MODELS
                                         if c.name == "claude-3-5-sonnet-latest")
    params = GenerationParams([{"role": "system", "content": LESSON},
                               {"role": "user", "content": "What is a cell?"}], 50)

    def reserved(params: GenerationParams) -> float:
        return chat.plan(card.name, [], params)[0].candidate.estimated_cost

    before = reserved(params)
    assert before == estimate(card, prompt_estimate(params), 50)  # nothing known: full price
    await ask(app, card.name, "Why are leaves green?", stream=False)  # writes the lesson
    assert reserved(params) == estimate(card, prompt_estimate(params), 50, cached_tokens=1500)
    assert reserved(params) < before
    assert reserved(replace(params, prompt_cache=False)) == before
    another = LESSON.replace("lesson0 ", "lesson9 ", 1)  # as long, not the one cached
    assert reserved(replace(params, messages=[{"role": "system", "content": another},
                                              *params.messages[1:]])) == before


async def respond(app: InProcess, model: str, question: str, stream: bool,
                  **extra: Any) -> dict[str, Any]:
    """A Responses API answer's usage, the lesson as its instructions."""
    body = {"model": model, "user": "learner-1", "max_output_tokens": 50, "stream": stream,
            "instructions": LESSON, "input": question, **extra}
    if not stream:
        response = await app.post("/v1/responses", body)
        assert response.status_code == 200, response.text
        usage: dict[str, Any] = response.json()["usage"]
        return usage
    async with app.client.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        events = [json.loads(line[6:]) async for line in response.aiter_lines()
                  if line.startswith("data: {")]
    (done,) = [e for e in events if e["type"] == "response.completed"]
    last: dict[str, Any] = done["response"]["usage"]
    return last


async def test_the_responses_api_reports_records_and_passes_on_the_cache_key(
        app: InProcess, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> None:
    """/v1/responses, streamed and not: usage details are the provider's, the ledger's cost is the
    fakes' invoice, a caller's prompt_cache_key reaches OpenAI, prompt_cache: false places none."""
    usages = []
    for stream in (False, True):
        fake_openai.enqueue(Reply(reasoning_tokens=7))
        for model in ("claude-3-5-sonnet-latest", "gpt-4o-mini"):
            usages.append(await respond(app, model, f"What is a cell ({stream})?", stream,
                                        prompt_cache_key="class-7"))
    sonnet, mini = usages[0::2], usages[1::2]
    assert [u["input_tokens_details"]["cache_write_tokens"] for u in sonnet] == [1500, 0]
    assert [u["input_tokens_details"]["cached_tokens"] for u in sonnet] == [0, 1500]
    assert [u["input_tokens_details"]["cached_tokens"] for u in mini] == [0, 1408]
    assert [u["output_tokens_details"]["reasoning_tokens"] for u in mini] == [7, 7]
    assert {r.body["prompt_cache_key"] for r in fake_openai.requests} == {"class-7"}

    records = await app.records("learner-1")
    assert {r["operation"] for r in records} == {"responses"}
    assert sum(r["reasoning_tokens"] for r in records) == 14
    lines = [*fake_anthropic.invoice, *fake_openai.invoice]
    assert abs(sum(r["cost_usd"] for r in records) - invoice_usd(app, lines)) < 1e-9

    await respond(app, "claude-3-5-sonnet-latest", "Once more?", False, prompt_cache=False,
                  instructions=LESSON.replace("lesson0 ", "other ", 1))
    assert isinstance(fake_anthropic.requests[-1].body["system"], str)  # no breakpoint
    assert fake_anthropic.invoice[-1].cache_write_5m == 0
