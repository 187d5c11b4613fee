"""Run: retries, backoff, deadlines and fallback over scripted in-process providers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.breakers import Breakers, BreakerSettings
from core.config import RouterConfig
from core.errors import AllProvidersFailed, InvalidRequest, ProviderError
from core.generation import Delta, GenerationParams, TokenUsage
from models.catalog import HOSTED_MODELS
from router.fallback import CONTINUE, Run, Switch, continuation
from router.policy import Candidate
from router.route import Route

PARAMS = GenerationParams(messages=[{"role": "user", "content": "hi"}], max_tokens=50)


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
        yield Delta("answer")
        yield Delta("", finish_reason="stop", usage=TokenUsage(3, 1))


def route(provider: Scripted, card_index: int) -> Route:
    return Route(provider, Candidate(HOSTED_MODELS[card_index], 0.0, "test"))  # type: ignore[arg-type]


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
