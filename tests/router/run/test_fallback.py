"""Run: retries, backoff, deadlines and fallback over scripted in-process providers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from core.breakers import Breakers, BreakerSettings
from core.config import RouterConfig
from core.errors import AllProvidersFailed, InvalidRequest, ProviderError, ProviderTimeout
from core.generation import Delta, GenerationParams, TokenUsage
from core.tiers import PRIORITY
from router.run.attempts import Route
from router.run.fallback import CONTINUE, Run, Switch, continuation
from router.run.policy import Candidate
from router.run.ttft import learned_limits
from tests.fakes.catalog import MODELS
from tests.fakes.clock import Clock

PARAMS = GenerationParams(messages=[{"role": "user", "content": "hi"}], max_tokens=50)
JSON = replace(PARAMS, json_schema={})


class Scripted:
    """A provider whose every call follows the next entry of its script."""

    def __init__(self, name: str, script: list) -> None:
        self.name = name
        self.script = list(script)
        self.calls: list[GenerationParams] = []

    async def aclose(self) -> None:
        return None

    async def stream(self, model: str, params: GenerationParams) -> AsyncIterator[Delta]:
        self.calls.append(params)
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, Exception):
            raise step
        if step == "cut":
            yield Delta("partial ")
            raise ProviderError("cut", provider=self.name, model=model)
        if step == "hang":
            await asyncio.Event().wait()
        yield Delta("answer")
        yield Delta("", finish_reason="stop", usage=TokenUsage(3, 1))


class Steady:
    """A healthy but slow stream: a word every `delay_s`, `words` of them (None: without end)."""

    def __init__(self, name: str, delay_s: float, words: int | None) -> None:
        self.name, self.delay_s, self.words = name, delay_s, words

    async def aclose(self) -> None:
        return None

    async def stream(self, model: str, params: GenerationParams) -> AsyncIterator[Delta]:
        sent = 0
        while self.words is None or sent < self.words:
            await asyncio.sleep(self.delay_s)
            sent += 1
            yield Delta("word ", tokens=1)
        yield Delta("", finish_reason="stop", usage=TokenUsage(3, sent))


def route(provider: Scripted | Steady, card_index: int) -> Route:
    return Route(provider, Candidate(MODELS[card_index], 0.0, "test"))  # type: ignore[arg-type]


def failure(status: int = 503, retry_after: float | None = None) -> ProviderError:
    return ProviderError("down", provider="p", model="m", upstream_status=status,
                         retryable=status != 401, retry_after=retry_after)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def run(routes: list[Route], sleeps: Sleeps | None = None, **config) -> Run:
    return Run(routes, RouterConfig(**{"max_retries": 2, **config}), Breakers(BreakerSettings()),
               sleep=sleeps or Sleeps(), rng=lambda: 1.0)


async def test_first_candidate_failing_falls_back_at_once() -> None:
    a, b = Scripted("a", [failure()]), Scripted("b", [])
    sleeps = Sleeps()
    r = run([route(a, 0), route(b, 2)], sleeps)
    completion, served_by = await r.complete(PARAMS)
    assert completion.text == "answer"
    assert served_by.provider is b
    assert sleeps.calls == []  # no backoff before failing over
    assert r.attempts[0].describe().endswith("(failed: p/m: down)")


async def test_last_candidate_is_retried_with_exponential_backoff() -> None:
    a = Scripted("a", [failure(), failure()])
    sleeps = Sleeps()
    completion, _ = await run([route(a, 0)], sleeps, retry_backoff_s=0.5).complete(PARAMS)
    assert completion.text == "answer"
    assert sleeps.calls == [0.5, 1.0]


async def test_retry_after_is_honoured() -> None:
    a = Scripted("a", [failure(429, retry_after=2.5)])
    sleeps = Sleeps()
    await run([route(a, 0)], sleeps).complete(PARAMS)
    assert sleeps.calls == [2.5]


async def test_retry_that_would_pass_the_deadline_is_not_made() -> None:
    a = Scripted("a", [failure(429, retry_after=100)])
    with pytest.raises(AllProvidersFailed):
        await run([route(a, 0)], request_timeout_s=5).complete(PARAMS)
    assert len(a.calls) == 1


async def test_non_retryable_errors_are_not_retried() -> None:
    a = Scripted("a", [failure(401)])
    with pytest.raises(AllProvidersFailed, match="all providers failed"):
        await run([route(a, 0)]).complete(PARAMS)
    assert len(a.calls) == 1


async def test_the_callers_mistake_is_not_retried_nor_sent_elsewhere() -> None:
    a, b = Scripted("a", [InvalidRequest("too long")]), Scripted("b", [])
    with pytest.raises(InvalidRequest):
        await run([route(a, 0), route(b, 2)]).complete(PARAMS)
    assert b.calls == []


async def test_without_fallback_only_the_first_candidate_is_tried() -> None:
    a, b = Scripted("a", [failure()] * 5), Scripted("b", [])
    with pytest.raises(AllProvidersFailed) as raised:
        await run([route(a, 0), route(b, 2)], enable_fallback=False).complete(PARAMS)
    assert b.calls == []
    assert len(a.calls) == 3  # 1 + max_retries
    assert raised.value.body()["error"]["tried"] == ["a/gpt-4o-mini"] * 3


async def test_a_stream_cut_mid_answer_continues_with_the_partial_text_as_context() -> None:
    a, b = Scripted("a", ["cut"]), Scripted("b", [])
    events = [e async for e in run([route(a, 0), route(b, 2)]).stream(PARAMS)]
    assert events[0] == Delta("partial ")
    assert events[1] == Switch("a/gpt-4o-mini", "b/claude-3-5-haiku-latest", "a/gpt-4o-mini: cut")
    assert b.calls[0].messages[-2:] == [{"role": "assistant", "content": "partial "},
                                        {"role": "user", "content": CONTINUE}]
    assert events[-1].finish_reason == "stop"


def test_continuation_budgets_the_remaining_tokens() -> None:
    params = continuation(PARAMS, "x" * 60)  # ~20 tokens already produced
    assert params.max_tokens == 30
    assert continuation(PARAMS, "") is PARAMS


def test_a_raw_prompt_continues_from_the_prompt_and_the_text_so_far() -> None:
    raw = GenerationParams([], max_tokens=50, prompt="Once ", seed=3)
    params = continuation(raw, "x" * 60)
    assert (params.prompt, params.messages, params.seed) == ("Once " + "x" * 60, [], 3)
    assert params.max_tokens < 50


async def test_open_breakers_are_skipped_but_the_only_candidate_is_still_tried() -> None:
    a, b = Scripted("a", []), Scripted("b", [])
    health = Breakers(BreakerSettings(failure_threshold=1))
    health.breaker("a", "gpt-4o-mini").record_failure()
    r = Run([route(a, 0), route(b, 2)], RouterConfig(), health)
    await r.complete(PARAMS)
    assert (a.calls, len(b.calls)) == ([], 1)
    assert r.attempts[0].describe() == "a/gpt-4o-mini (skipped: circuit open)"
    alone = Run([route(a, 0)], RouterConfig(), health)
    completion, _ = await alone.complete(PARAMS)
    assert completion.text == "answer"


def half_open(clock: Clock) -> Breakers:
    """Breakers whose a/gpt-4o-mini is half-open, with its one probe free."""
    health = Breakers(BreakerSettings(failure_threshold=1, cooldown_s=10), clock)
    health.breaker("a", "gpt-4o-mini").record_failure()
    clock.now += 10
    return health


# Timeouts: a silent provider leaves the others time; a producing stream is not cut.

async def test_a_silent_candidate_leaves_the_others_a_share_of_the_deadline() -> None:
    """AI_REQUEST_TIMEOUT equal to the first-token limit: the hung first candidate may not use
    up the whole deadline while another candidate remains."""
    a, b = Scripted("a", ["hang"]), Scripted("b", [])
    r = run([route(a, 0), route(b, 2)], request_timeout_s=0.6, first_token_timeout_s=0.6)
    started = time.monotonic()
    completion, served_by = await r.complete(PARAMS)
    assert served_by.provider is b and completion.text == "answer"
    assert time.monotonic() - started < 0.5
    assert r.attempts[0].describe() == "a/gpt-4o-mini (failed: a/gpt-4o-mini: no answer within 0.3s)"


async def test_a_silent_model_is_left_at_its_learned_limit() -> None:
    config = RouterConfig(first_token_timeout_s=5, learned_first_token={
        "min_samples": 3, "floor_s": 0.1})
    limits = learned_limits(config)
    for _ in range(3):
        limits.observe("a", "gpt-4o-mini", 0.01)  # it usually answers at once
    a, b = Scripted("a", ["hang"]), Scripted("b", [])
    r = Run([route(a, 0), route(b, 2)], config, Breakers(BreakerSettings()), first_token=limits)
    _, served_by = await r.complete(PARAMS)
    assert served_by.provider is b
    assert r.attempts[0].error is not None
    assert r.attempts[0].error.message == "a/gpt-4o-mini: no answer within 0.1s"


async def test_the_last_candidate_waits_its_configured_limit() -> None:
    config = RouterConfig(first_token_timeout_s=0.3, max_retries=0, learned_first_token={
        "min_samples": 1, "floor_s": 0.01})
    limits = learned_limits(config)
    limits.observe("a", "gpt-4o-mini", 0.001)
    r = Run([route(Scripted("a", ["hang"]), 0)], config, Breakers(BreakerSettings()),
            first_token=limits)
    with pytest.raises(AllProvidersFailed, match=r"no answer within 0\.3s"):
        await r.complete(PARAMS)


async def test_times_to_first_token_are_learned_per_model() -> None:
    config = RouterConfig()
    limits = learned_limits(config)
    await Run([route(Scripted("a", []), 0)], config, Breakers(BreakerSettings()),
              first_token=limits).complete(PARAMS)
    assert limits.snapshot() == {"a/gpt-4o-mini": {"samples": 1, "limit_s": 30.0}}


async def test_a_steady_stream_runs_past_the_request_deadline() -> None:
    """The deadline bounds waiting for the first token; a stream that keeps producing runs on."""
    a = Steady("a", delay_s=0.05, words=8)
    health = Breakers(BreakerSettings())
    r = Run([route(a, 0)], RouterConfig(request_timeout_s=0.2, idle_timeout_s=0.2), health)
    completion, _ = await r.complete(PARAMS)
    assert completion.text == "word " * 8 and completion.finish_reason == "stop"
    assert health.snapshot()["a/gpt-4o-mini"]["consecutive_failures"] == 0


async def test_the_stream_cap_ends_an_endless_stream_like_max_tokens_not_as_a_failure() -> None:
    a, b = Steady("a", delay_s=0.05, words=None), Scripted("b", [])
    health = Breakers(BreakerSettings())
    r = Run([route(a, 0), route(b, 2)], RouterConfig(request_timeout_s=0.2, max_stream_s=0.3),
            health)
    events = [e async for e in r.stream(PARAMS)]
    assert events[-1] == Delta("", finish_reason="length")
    assert 3 <= len(events) <= 7 and b.calls == []
    assert health.snapshot()["a/gpt-4o-mini"]["consecutive_failures"] == 0
    assert r.attempts[0].error is None
    assert r.report().charges[0].estimated  # billed for the words counted


# Breakers: a probe is released however its call ends.

async def test_the_budget_is_checked_before_the_probe_is_taken() -> None:
    class Refuses:
        """Refuses the first attempt (on a), covers the next."""

        calls = 0

        async def refusal(self, spent_usd: float, next_usd: float) -> str | None:
            self.calls += 1
            return "over budget" if self.calls == 1 else None

    clock = Clock()
    health = half_open(clock)
    a, b = Scripted("a", []), Scripted("b", [])
    r = Run([route(a, 0), route(b, 2)], RouterConfig(), health, clock=clock, budget=Refuses())
    await r.complete(PARAMS)
    assert r.attempts[0].describe() == "a/gpt-4o-mini (skipped: over budget)"
    assert health.breaker("a", "gpt-4o-mini").allow()  # the probe is still there for others


async def test_a_cancelled_call_releases_its_probe() -> None:
    clock = Clock()
    health = half_open(clock)
    r = Run([route(Scripted("a", ["hang"]), 0)], RouterConfig(), health, clock=clock)
    task = asyncio.ensure_future(r.complete(PARAMS))
    await asyncio.sleep(0.05)
    assert not health.breaker("a", "gpt-4o-mini").available()  # the probe is out
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert health.breaker("a", "gpt-4o-mini").allow()


async def test_a_client_that_leaves_mid_stream_releases_the_probe() -> None:
    clock = Clock()
    health = half_open(clock)
    r = Run([route(Steady("a", delay_s=0.01, words=None), 0)], RouterConfig(), health, clock=clock)
    events = r.stream(PARAMS)
    await anext(events)
    await events.aclose()  # what Starlette does when the client disconnects
    assert health.breaker("a", "gpt-4o-mini").state == "half_open"
    assert health.breaker("a", "gpt-4o-mini").allow()


async def test_a_timeout_still_counts_against_the_probe() -> None:
    clock = Clock()
    health = half_open(clock)
    r = Run([route(Scripted("a", ["hang"]), 0)], RouterConfig(first_token_timeout_s=0.05,
                                                               max_retries=0), health, clock=clock)
    with pytest.raises(AllProvidersFailed):
        await r.complete(PARAMS)
    assert isinstance(r.attempts[0].error, ProviderTimeout)
    assert health.breaker("a", "gpt-4o-mini").state == "open"


# Structured output: a JSON answer is never stitched from two models.

async def test_a_json_answer_that_broke_off_starts_over_on_the_next_candidate() -> None:
    a, b = Scripted("a", ["cut"]), Scripted("b", [])
    r = run([route(a, 0), route(b, 2)])
    completion, served_by = await r.complete(JSON)
    assert served_by.provider is b
    assert completion.text == "answer"  # not "partial answer"
    # the original request (at the default tier's priority), not a continuation
    assert b.calls == [replace(JSON, priority=PRIORITY["interactive"])]


async def test_a_streamed_json_answer_that_broke_off_ends_with_an_error() -> None:
    """Its first part already reached the client: another model's JSON cannot be appended."""
    a, b = Scripted("a", ["cut"]), Scripted("b", [])
    events = run([route(a, 0), route(b, 2)]).stream(JSON)
    assert await anext(events) == Delta("partial ")
    with pytest.raises(ProviderError, match="JSON answer broke off mid-stream"):
        await anext(events)
    assert b.calls == []
