"""Running a request over the policy's ranking: breakers, retries, timeouts and fallback.

- Waiting is bounded, a stream that keeps producing is not. The request deadline
  (request_timeout_s) bounds the wait for the answer's first delta, over all attempts. An attempt
  waits for its first delta at most first_token_timeout_s and, while other candidates remain, at
  most its model's learned limit (router/run/ttft.py) and an equal share of the time left, so that a
  silent provider leaves the others time. Once the answer streams, each wait between deltas is
  bounded by idle_timeout_s, and the whole stream by max_stream_s, which ends it as max_tokens
  does (finish_reason "length"), not as a provider failure.
- A failure moves on to the next candidate at once (when fallback is on); retries with exponential
  backoff and jitter, honouring Retry-After, are spent on the last candidate only, so one failing
  provider costs a fast failover rather than a backoff.
- A text stream that fails after its first delta continues on the next candidate, with the text
  produced so far as context, so the client sees one stream; a `Switch` marks the seam. A JSON
  answer (json_schema / json_object) or an answer that started a tool call cannot be continued by
  another model: `complete()` starts it over on the next candidate; `stream()`, whose deltas
  already reached the client, ends with an error instead.
- Every attempt (first, fallback, retry, continuation) is first covered by the caller's budget:
  what the run has spent so far plus that attempt's estimate (for a continuation, its longer
  prompt); an attempt the budget cannot cover is skipped.
- Open circuit breakers are skipped, except that the last candidate is called when nothing else
  could be: a request is never refused without trying something. The breaker's probe is taken
  after the budget check, and a call that ends without a verdict (cancelled, capped) releases it.
- A prompt too long for one model's context (ContextExceeded) moves on to the next candidate, not
  retried and not counted by its breaker; only when no candidate fits it is the caller's 400.
- Load spills over: every candidate is sent with its tier's priority (core/tiers.py) and the
  caller's group (whose fair share of a local engine's slots it takes), and one
  other than the last with max_queue_wait_s (router.spill_over_wait_s of the request's tier:
  background sooner than interactive, an assessment never); a local model that expects to keep
  it waiting longer refuses at once (ModelBusy), not counted by its breaker; the next candidate
  serves it. The last candidate waits in its queue; only a full queue refuses it (429 with
  Retry-After).
- When every candidate failed: AllProvidersFailed, naming each provider/model tried; when the
  budget refused a paid candidate that might have served it, BudgetExceeded (402) instead."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from core.breakers import Breakers, CircuitBreaker, counts
from core.config import RouterConfig
from core.errors import (
    AllProvidersFailed,
    BudgetExceeded,
    ContextExceeded,
    ModelBusy,
    ProviderError,
    ProviderTimeout,
    ServiceError,
)
from core.generation import Completion, Delta, GenerationParams, TokenUsage, ToolCallAssembler
from core.pricing import estimate, estimate_tokens, prompt_estimate
from core.tiers import PRIORITY, Tier
from router.run.attempts import Attempt, Route, RunReport, Switch, report
from router.run.spans import NO_SPANS, Spans
from router.run.ttft import FirstTokenLimits, learned_limits

OVER_BUDGET = "over budget"  # a BudgetGate's refusal when the budget cannot cover the attempt
CONTINUE = ("Continue your previous answer exactly where it stopped. Do not repeat anything and "
            "do not mention the interruption.")


class BudgetGate(Protocol):
    """The caller's budget as a run sees it."""

    async def refusal(self, spent_usd: float, next_usd: float) -> str | None:
        """None when the budget covers what the run has spent plus the next attempt's estimate
        (it may reserve more to do so); else why not."""
        ...

    def exceeded(self, message: str) -> BudgetExceeded:
        """The 402 of a run the budget stopped (`message` lists the attempts), naming the budget."""
        ...


class StreamCapped(Exception):
    """The request reached max_stream_s while its answer streamed."""


class Run:
    """One request's journey over its candidates. `attempts` is the path taken, for the response."""

    def __init__(self, routes: list[Route], config: RouterConfig, health: Breakers,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random,
                 budget: BudgetGate | None = None, first_token: FirstTokenLimits | None = None,
                 tier: Tier = "interactive", group: str | None = None,
                 spans: Spans = NO_SPANS):
        self._tier = tier
        self._group = group
        self._spans = spans
        self._routes = routes if config.enable_fallback else routes[:1]
        self._budget = budget
        self._config = config
        self._health = health
        self._first_token = first_token or learned_limits(config, clock)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.deadline = clock() + config.request_timeout_s
        self._streaming_since: float | None = None  # the answer's first delta: the deadline is met
        self.attempts: list[Attempt] = []

    def report(self) -> RunReport:
        return report(self.attempts)

    @property
    def route(self) -> Route:
        """The latest attempt's route: once a delta came, the one serving."""
        return self.attempts[-1].route

    async def complete(self, params: GenerationParams) -> tuple[Completion, Route]:
        """Non-streamed requests run as streams too, so the same first-token and idle limits catch
        a hung provider long before the total deadline. A JSON answer or tool call that broke off
        starts over."""
        parts: list[str] = []
        calls = ToolCallAssembler()
        async for event in self._events(params, restartable=True):
            if isinstance(event, Switch):
                if event.restart:
                    parts, calls = [], ToolCallAssembler()
                continue
            parts.append(event.text)
            calls.add(event.tool_calls)
            if event.finish_reason is not None:
                return Completion("".join(parts), event.finish_reason, event.usage or TokenUsage(),
                                  calls.calls()), self.route
        raise self._exhausted()  # unreachable: _events() ends with a finish or raises

    def stream(self, params: GenerationParams,
               restartable: bool = False) -> AsyncIterator[Delta | Switch]:
        """`restartable`: the caller sends nothing on until the end, so a JSON answer that broke
        off starts over on the next candidate (a Switch with `restart`) instead of failing."""
        return self._events(params, restartable=restartable)

    async def _events(self, params: GenerationParams,
                      restartable: bool) -> AsyncIterator[Delta | Switch]:
        """`restartable`: nothing was sent on yet, so an answer that cannot be continued by another
        model (JSON, or one that started a tool call) can start over."""
        produced, handover, restart = "", None, False
        structured = params.json_schema is not None

        def next_params() -> GenerationParams:  # read as each attempt starts: the text so far
            return params if structured or restart else continuation(params, produced)

        async for attempt in self._tries(next_params):
            route, started, called = attempt.route, False, self._clock()
            sent = self._waiting(route, next_params())
            span = self._spans.attempt(attempt, sent)
            deltas = route.provider.stream(route.model, span.traced(sent))
            try:
                while True:
                    delta = await self._next(deltas, attempt, started)
                    if not started:
                        self._first_delta(route, called)
                        if handover is not None:  # announced by the candidate that takes over
                            yield Switch(handover[0].header(), route.header(),
                                         handover[1].message, restart=restart)
                    started = True
                    produced += delta.text
                    restart = restart or bool(delta.tool_calls)
                    if delta.finish_reason is not None:
                        self._succeeded(attempt, delta.usage)
                        span.end(attempt)  # now: the caller may not close this generator soon
                        yield delta
                        return
                    yield delta
            except StreamCapped:
                yield Delta("", finish_reason="length")
                return
            except ServiceError as error:
                self._failed(attempt, error)
                restart = restart or structured
                if started and restart and not restartable:
                    raise interrupted(route, "a tool call" if not structured else "the JSON answer"
                                      ) from None
                handover = (route, error) if started else handover
            finally:
                span.end(attempt)
                if not attempt.finished and attempt.error is None and attempt.probe:
                    self._breaker(route).release()  # no verdict: cancelled, or the cap reached
                # On cancellation (the client left) the provider's generator may still be running
                # in the abandoned wait_for task, which closes it as it unwinds.
                with contextlib.suppress(RuntimeError):
                    await deltas.aclose()
        raise self._exhausted()

    def _waiting(self, route: Route, params: GenerationParams) -> GenerationParams:
        """The request at its tier's priority, in its group; a candidate other than the last is not
        kept waiting in a busy local model's queue longer than its tier's spill-over wait."""
        params = dataclasses.replace(params, priority=PRIORITY[self._tier], group=self._group)
        wait = self._config.spill_over_wait_s.of(self._tier)
        if wait is None or route == self._routes[-1]:
            return params
        return dataclasses.replace(params, max_queue_wait_s=wait)

    def _first_delta(self, route: Route, called: float) -> None:
        """An attempt's first delta: its model's time to first token is learned, and the answer
        now streams (if it did not already)."""
        now = self._clock()
        self._first_token.observe(route.provider.name, route.model, now - called)
        if self._streaming_since is None:
            self._streaming_since = now

    async def _next(self, deltas: AsyncIterator[Delta], attempt: Attempt, started: bool) -> Delta:
        """The attempt's next delta, waited for no longer than its limit (first-token or idle) and
        the time left (of the deadline, or of the stream cap once the answer streams)."""
        route = attempt.route
        limit = self._config.idle_timeout_s if started else self._first_token_limit(route)
        left = self._left()
        try:
            delta = await asyncio.wait_for(anext(deltas), timeout=max(0.0, min(limit, left)))
        except StopAsyncIteration:
            raise ProviderError("the stream ended before the model finished",
                                provider=route.provider.name, model=route.model) from None
        except TimeoutError:
            if self._streaming_since is not None and left <= limit:
                raise StreamCapped from None
            attempt.waited_out = not started
            raise ProviderTimeout(f"no answer within {max(0.0, min(limit, left)):.1f}s",
                                  provider=route.provider.name, model=route.model) from None
        attempt.count(delta)
        return delta

    def _first_token_limit(self, route: Route) -> float:
        """The configured limit; while other candidates remain, also the model's learned limit and
        an equal share of the time left, so that a silent provider leaves the others time."""
        others = len(self._routes) - 1 - self._routes.index(route)
        if others == 0:
            return self._config.first_token_timeout_s
        return min(self._first_token.limit(route.provider.name, route.model),
                   self._left() / (others + 1))

    async def _tries(self, next_params: Callable[[], GenerationParams]
                     ) -> AsyncIterator[Attempt]:
        last_index = len(self._routes) - 1
        for index, route in enumerate(self._routes):
            retries = self._config.max_retries if index == last_index else 0
            for retry in range(retries + 1):
                if self._left() <= 0:
                    return
                # An open breaker is skipped while another candidate remains; the last candidate,
                # when nothing else was tried, is called anyway: never cool the only option.
                forced = index == last_index and not self._tried_other_than(route)
                params = next_params()
                skipped, probe = await self._skipped(route, forced, params)
                if skipped is not None:
                    self.attempts.append(Attempt(route, skipped=skipped))
                    break
                attempt = Attempt(route, prompt_estimate(params), probe=probe)
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

    async def _skipped(self, route: Route, forced: bool,
                       params: GenerationParams) -> tuple[str | None, bool]:
        """Why `route` is not called now (or None), and whether the call holds its breaker's
        pass. The probe is taken last, once the budget covers the call, so that a skipped call
        never holds one; a forced call may go without."""
        breaker = self._breaker(route)
        if not (forced or breaker.available()):
            return "circuit open", False
        refusal = await self._refusal(route, params)
        if refusal is not None:
            return refusal, False
        probe = breaker.allow()
        return (None if probe or forced else "circuit open"), probe

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

    def _left(self) -> float:
        """Time left: of the deadline until the answer's first delta, then of the stream cap."""
        if self._streaming_since is None:
            return self.deadline - self._clock()
        return self._streaming_since + self._config.max_stream_s - self._clock()

    def _breaker(self, route: Route) -> CircuitBreaker:
        return self._health.breaker(route.provider.name, route.model)

    def _succeeded(self, attempt: Attempt, usage: TokenUsage | None) -> None:
        """`usage` None: the provider finished without reporting it (billed as estimated)."""
        attempt.finished, attempt.usage = True, usage
        self._breaker(attempt.route).record_success()

    def _failed(self, attempt: Attempt, error: ServiceError) -> None:
        attempt.error = error
        verdict = counts(error)
        breaker = self._breaker(attempt.route)
        if verdict != "ignore":
            breaker.record_failure(verdict)
            return
        if attempt.probe:
            breaker.release()  # the caller's request proves nothing about the provider
        last = attempt.route == self._routes[-1]
        if not isinstance(error, ContextExceeded | ModelBusy) or last:
            raise error  # the caller's mistake: another provider would refuse it too

    def _exhausted(self) -> ServiceError:
        tried = [(a.route.header(), a.skipped or (a.error.message if a.error else "unfinished"))
                 for a in self.attempts]
        called = [a for a in self.attempts if not a.skipped]
        if self._budget is not None and any(a.skipped == OVER_BUDGET for a in self.attempts):
            detail = "; ".join(f"{route} ({what})" for route, what in tried)
            return self._budget.exceeded(f"the spending budget cannot cover another candidate "
                                         f"after: {detail}")
        too_long = [a.error for a in called if isinstance(a.error, ContextExceeded)]
        if called and len(too_long) == len(called):
            return too_long[-1]  # no candidate tried could fit the prompt: the caller's 400
        if self._left() <= 0:
            passed = (f"stream cap of {self._config.max_stream_s:g}s" if self._streaming_since
                      else f"request deadline of {self._config.request_timeout_s:g}s")
            tried.append(("router", f"{passed} passed"))
        return AllProvidersFailed(tried)


def interrupted(route: Route, what: str = "the JSON answer") -> ProviderError:
    return ProviderError(f"{what} broke off mid-stream and cannot be continued by another "
                         "model; retry the request", provider=route.provider.name,
                         model=route.model, retryable=False)


def continuation(params: GenerationParams, produced: str) -> GenerationParams:
    """The same request, continued after `produced` (used when a stream fails over mid-answer)."""
    if not produced:
        return params
    remaining = max(1, params.max_tokens - estimate_tokens(produced))
    if params.prompt is not None:  # a raw prompt continues exactly where the text stopped
        return dataclasses.replace(params, prompt=params.prompt + produced, max_tokens=remaining)
    messages = [*params.messages, {"role": "assistant", "content": produced},
                {"role": "user", "content": CONTINUE}]
    return dataclasses.replace(params, messages=messages, max_tokens=remaining)
