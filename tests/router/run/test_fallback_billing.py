"""Run: what each attempt is billed (finished without usage, cut while waiting for its first
token), what a budget that refuses every fallback answers, the probes of forced calls, a prompt too
long for one candidate, and the markers a stream carries when it moves to another candidate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from core.breakers import Breakers, BreakerSettings
from core.config import RouterConfig
from core.errors import AllProvidersFailed, BudgetExceeded, InvalidRequest
from core.generation import Delta, GenerationParams, PromptTooLong, TokenUsage
from core.pricing import prompt_estimate
from models.catalog import local_card
from router.run.attempts import Route
from router.run.fallback import Run, Switch
from router.run.policy import Candidate
from router.run.providers.local import engine_error
from tests.router.run.test_fallback import PARAMS, Clock, Scripted, failure, half_open, route, run


class Usageless:
    """Finishes properly (finish_reason) but reports no usage, as some OpenAI-compatible gateways
    do whatever stream_options.include_usage says."""

    name = "u"

    async def aclose(self) -> None:
        return None

    async def stream(self, model: str, params: GenerationParams) -> AsyncIterator[Delta]:
        for word in ("one ", "two ", "three"):
            yield Delta(word, tokens=1)
        yield Delta("", finish_reason="stop")


def local(provider: object, name: str = "smollm2-135m") -> Route:
    return Route(provider, Candidate(local_card(name, 2048), 0.0, "test"))  # type: ignore[arg-type]


async def test_a_finish_without_usage_is_billed_as_estimated_never_as_zero() -> None:
    r = run([route(Usageless(), 0)])  # type: ignore[arg-type]
    completion, _ = await r.complete(PARAMS)
    assert completion.finish_reason == "stop"
    (charge,) = r.report().charges
    assert charge.estimated
    assert charge.usage == TokenUsage(prompt_estimate(PARAMS), 3)
    assert r.report().cost_usd > 0


async def test_an_attempt_cut_waiting_for_its_first_token_is_billed_its_prompt() -> None:
    """The provider accepted the prompt (and bills it) though the router stopped waiting."""
    a, b = Scripted("a", ["hang"]), Scripted("b", [])
    r = run([route(a, 0), route(b, 2)], request_timeout_s=0.4, first_token_timeout_s=0.2)
    await r.complete(PARAMS)
    first = r.report().charges[0]
    assert first.estimated and first.usage == TokenUsage(prompt_estimate(PARAMS), 0)


def test_the_prompt_estimate_counts_the_json_schema() -> None:
    schema = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(50)}}
    assert prompt_estimate(replace(PARAMS, json_schema=schema)) >= prompt_estimate(PARAMS) + 300


class Refuses:
    """A budget that covers nothing paid."""

    async def refusal(self, spent_usd: float, next_usd: float) -> str | None:
        return "over budget" if next_usd > 0 else None

    def exceeded(self, message: str) -> BudgetExceeded:
        return BudgetExceeded(message, level="user", period="day")


async def test_a_budget_that_skips_every_paid_fallback_is_a_402_naming_the_budget() -> None:
    free, paid = Scripted("local", [failure()]), Scripted("b", [])
    r = Run([local(free), route(paid, 2)], RouterConfig(max_retries=0),
            Breakers(BreakerSettings()), budget=Refuses())
    with pytest.raises(BudgetExceeded, match="over budget"):
        await r.complete(PARAMS)
    assert paid.calls == []


async def test_without_a_budget_skip_every_failure_is_still_all_providers_failed() -> None:
    a, b = Scripted("a", [failure()]), Scripted("b", [failure()])
    with pytest.raises(AllProvidersFailed):
        await run([route(a, 0), route(b, 2)], max_retries=0).complete(PARAMS)


async def test_a_forced_call_without_a_probe_releases_none() -> None:
    """The only candidate is called though its half-open breaker's probe is out; when that call
    ends without a verdict it must not free the probe another call holds."""
    clock = Clock()
    health = half_open(clock)
    breaker = health.breaker("a", "gpt-4o-mini")
    assert breaker.allow()  # another request holds the one probe
    r = Run([route(Scripted("a", ["hang"]), 0)], RouterConfig(), health, clock=clock)
    task = asyncio.ensure_future(r.complete(PARAMS))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not breaker.available()  # the other request's probe is still out


async def test_a_prompt_too_long_for_one_candidate_moves_to_the_next() -> None:
    class TooLong:
        name = "local"
        calls = 0

        async def aclose(self) -> None:
            return None

        async def stream(self, model: str, params: GenerationParams) -> AsyncIterator[Delta]:
            self.calls += 1
            raise engine_error("local", model, PromptTooLong("the prompt is 6000 tokens"))
            yield Delta("")  # pragma: no cover (a generator)

    small, paid = TooLong(), Scripted("b", [])
    health = Breakers(BreakerSettings(failure_threshold=1))
    r = Run([local(small), route(paid, 2)], RouterConfig(max_retries=2), health)
    completion, served_by = await r.complete(PARAMS)
    assert served_by.provider is paid and completion.text == "answer"
    assert small.calls == 1  # not retried
    assert health.breaker("local", "smollm2-135m").state == "closed"
    assert "too long" in r.attempts[0].describe() or "6000 tokens" in r.attempts[0].describe()


async def test_a_prompt_too_long_for_every_candidate_is_the_callers_400() -> None:
    class TooLong:
        name = "local"

        async def aclose(self) -> None:
            return None

        async def stream(self, model: str, params: GenerationParams) -> AsyncIterator[Delta]:
            raise engine_error("local", model, PromptTooLong("the prompt is 6000 tokens"))
            yield Delta("")  # pragma: no cover (a generator)

    with pytest.raises(InvalidRequest, match="6000 tokens"):
        await run([local(TooLong()), local(TooLong(), "llama-3-8b")]).complete(PARAMS)


async def test_a_middle_candidate_failing_before_its_first_delta_adds_no_marker() -> None:
    a, b, c = Scripted("a", ["cut"]), Scripted("b", [failure()]), Scripted("c", [])
    events = [e async for e in run([route(a, 0), route(b, 2), route(c, 1)],
                                   max_retries=0).stream(PARAMS)]
    switches = [(e.from_route, e.to_route) for e in events if isinstance(e, Switch)]
    assert switches == [("a/gpt-4o-mini", c.name + "/" + route(c, 1).model)]
    assert events[-1].finish_reason == "stop"
