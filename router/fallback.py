"""Running a request over the policy's ranking: breakers, retries, timeouts and fallback.

- Each attempt is bounded: the request's total deadline, a time-to-first-token limit, and an idle
  limit between deltas (streams that go silent are abandoned).
- A failure moves on to the next candidate at once (when fallback is on); retries with exponential
  backoff and jitter, honouring Retry-After, are spent on the last candidate only, so one failing
  provider costs a fast failover rather than a backoff.
- A stream that fails after its first delta continues on the next candidate, with the text produced
  so far as context, so the client sees one stream; a `Switch` marks the seam.
- Every attempt (first, fallback, retry, continuation) is first covered by the caller's budget:
  what the run has spent so far plus that attempt's estimate (for a continuation, its longer
  prompt); an attempt the budget cannot cover is skipped.
- Open circuit breakers are skipped, except that the last candidate is called when nothing else
  could be: a request is never refused without trying something.
- When every candidate failed: AllProvidersFailed, naming each provider/model tried."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

from core.breakers import Breakers, counts
from core.config import RouterConfig
from core.errors import AllProvidersFailed, ProviderError, ProviderTimeout, ServiceError
from core.generation import Completion, Delta, GenerationParams, TokenUsage
from core.pricing import estimate, estimate_tokens
from router.route import Attempt, Route, RunReport, Switch, report

T = TypeVar("T")
CONTINUE = ("Continue your previous answer exactly where it stopped. Do not repeat anything and "
            "do not mention the interruption.")


class BudgetGate(Protocol):
    """The caller's budget as a run sees it."""

    async def refusal(self, spent_usd: float, next_usd: float) -> str | None:
        """None when the budget covers what the run has spent plus the next attempt's estimate
        (it may reserve more to do so); else why not."""
        ...


class Run:
    """One request's journey over its candidates. `attempts` is the path taken, for the response."""

    def __init__(self, routes: list[Route], config: RouterConfig, health: Breakers,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random,
                 budget: BudgetGate | None = None):
        self._routes = routes if config.enable_fallback else routes[:1]
        self._budget = budget
        self._config = config
        self._health = health
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.deadline = clock() + config.request_timeout_s
        self.attempts: list[Attempt] = []

    def report(self) -> RunReport:
        return report(self.attempts)

    async def complete(self, params: GenerationParams) -> tuple[Completion, Route]:
        """Non-streamed requests run as streams too, so the same first-token and idle limits catch
        a hung provider long before the total deadline."""
        parts: list[str] = []
        async for event in self.stream(params):
            if isinstance(event, Delta):
                parts.append(event.text)
                if event.finish_reason is not None:
                    return Completion("".join(parts), event.finish_reason,
                                      event.usage or TokenUsage()), self.attempts[-1].route
        raise self._exhausted()  # unreachable: stream() ends with a finish or raises

    async def stream(self, params: GenerationParams) -> AsyncIterator[Delta | Switch]:
        produced, handover = "", None
        # The next attempt's params are read when it is about to start: with the text so far.
        async for attempt in self._tries(lambda: continuation(params, produced)):  # noqa: B023
            route = attempt.route
            if handover is not None and handover.error is not None:
                yield Switch(handover.route.header(), route.header(), handover.error.message)
            deltas = route.provider.stream(route.model, continuation(params, produced))
            started = False
            try:
                while True:
                    limit = self._config.idle_timeout_s if started else self._config.first_token_timeout_s
                    delta = await self._bounded(anext(deltas), min(limit, self._remaining()), route)
                    started = True
                    produced += delta.text
                    attempt.count(delta)
                    if delta.finish_reason is not None:
                        self._succeeded(attempt, delta.usage or TokenUsage())
                        yield delta
                        return
                    yield delta
            except StopAsyncIteration:
                self._failed(attempt, ProviderError("the stream ended before the model finished",
                                                    provider=route.provider.name, model=route.model))
                handover = attempt if started else handover
            except ServiceError as error:
                self._failed(attempt, error)
                handover = attempt if started else handover
            finally:
                # On cancellation (the client left) the provider's generator may still be running
                # in the abandoned wait_for task, which closes it as it unwinds.
                with contextlib.suppress(RuntimeError):
                    await deltas.aclose()
        raise self._exhausted()

    async def _tries(self, next_params: Callable[[], GenerationParams]) -> AsyncIterator[Attempt]:
        last_index = len(self._routes) - 1
        for index, route in enumerate(self._routes):
            retries = self._config.max_retries if index == last_index else 0
            for retry in range(retries + 1):
                if self._remaining() <= 0:
                    return
                allowed = self._health.breaker(route.provider.name, route.model).allow()
                # An open breaker is skipped while another candidate remains; the last candidate,
                # when nothing else was tried, is called anyway: never cool the only option.
                if not allowed and (index < last_index or self._tried_other_than(route)):
                    self.attempts.append(Attempt(route, skipped="circuit open"))
                    break
                params = next_params()
                refusal = await self._refusal(route, params)
                if refusal:
                    self.attempts.append(Attempt(route, skipped=refusal))
                    break
                attempt = Attempt(route, prompt_estimate(params))
                self.attempts.append(attempt)
                yield attempt
                error = attempt.error
                if error is None:
                    return
                if not isinstance(error, ProviderError) or not error.retryable or retry == retries:
                    break
                delay = self._backoff(retry, error.retry_after)
                if self._clock() + delay >= self.deadline:
                    break
                await self._sleep(delay)

    async def _refusal(self, route: Route, params: GenerationParams) -> str | None:
        if self._budget is None:
            return None
        next_usd = estimate(route.card, prompt_estimate(params), params.max_tokens)
        return await self._budget.refusal(self.report().cost_usd, next_usd)

    def _tried_other_than(self, route: Route) -> bool:
        return any(not a.skipped and a.route != route for a in self.attempts)

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        cap = min(self._config.retry_backoff_max_s, self._config.retry_backoff_s * 2 ** retry)
        return float(cap * (0.5 + self._rng() / 2))  # "equal jitter": never zero, never above the cap

    async def _bounded(self, call: Awaitable[T], limit: float, route: Route) -> T:
        try:
            return await asyncio.wait_for(call, timeout=max(limit, 0.0))
        except TimeoutError:
            raise ProviderTimeout(f"no answer within {limit:.1f}s", provider=route.provider.name,
                                  model=route.model) from None

    def _remaining(self) -> float:
        return self.deadline - self._clock()

    def _succeeded(self, attempt: Attempt, usage: TokenUsage) -> None:
        attempt.usage = usage
        self._health.breaker(attempt.route.provider.name, attempt.route.model).record_success()

    def _failed(self, attempt: Attempt, error: ServiceError) -> None:
        verdict = counts(error)
        self._health.breaker(attempt.route.provider.name, attempt.route.model).record_failure(verdict)
        if verdict == "ignore":
            raise error  # the caller's mistake: another provider would refuse it too
        attempt.error = error

    def _exhausted(self) -> AllProvidersFailed:
        tried = [(a.route.header(), a.skipped or (a.error.message if a.error else "unfinished"))
                 for a in self.attempts]
        if self._remaining() <= 0:
            tried.append(("router", f"request deadline of {self._config.request_timeout_s:g}s passed"))
        return AllProvidersFailed(tried)


def prompt_estimate(params: GenerationParams) -> int:
    return estimate_tokens(sum(len(m["content"]) + 16 for m in params.messages))


def continuation(params: GenerationParams, produced: str) -> GenerationParams:
    """The same request, continued after `produced` (used when a stream fails over mid-answer)."""
    if not produced:
        return params
    remaining = max(1, params.max_tokens - estimate_tokens(len(produced)))
    messages = [*params.messages, {"role": "assistant", "content": produced},
                {"role": "user", "content": CONTINUE}]
    return GenerationParams(messages=messages, max_tokens=remaining, temperature=params.temperature,
                            top_p=params.top_p, stop=params.stop, seed=params.seed,
                            json_schema=params.json_schema)
