"""One request's accounting, from admission to its ledger record.

`Accounting.start()` admits a request (request rate limits) and returns its `Meter`. Once the
request's size is known the meter reserves its estimated tokens (token rate limits), and it holds
the budget reservations made for each run over the providers: a run's hold always covers what the
run has spent plus its next attempt's estimate. `close()` (synchronous, so that it can run when a
client disconnects mid-stream) turns the runs' usage into one ledger record, then settles the token
reservation and the budget holds to the real usage in the background."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from core import metrics
from core.config import ApiKeyConfig
from core.errors import BudgetExceeded, ProviderError, ServiceError, StorageUnavailable, status_of
from core.generation import TokenUsage
from core.tiers import Tier, granted
from models.catalog import ModelCard
from router.run.attempts import Reporting, Route
from router.run.fallback import OVER_BUDGET
from router.usage.budget_stores import Hold
from router.usage.budgets import Budgets, to_nano
from router.usage.ledger import Ledger
from router.usage.ratelimit import RateLimiter
from router.usage.record import Outcome, UsageRecord, new_record_id, utc_day
from router.usage.sharedstate import SharedState
from router.usage.spend import EmbeddingUse, Spend

log = logging.getLogger("ray.serve")
T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    key: ApiKeyConfig
    user_id: str | None  # None: the request named no user
    request_id: str | None  # the caller's X-Request-Id (validated by the route)
    admitted: float  # wall time: the periods its spend counts in
    idempotency_key: str | None = None

    @property
    def tenant(self) -> str:
        """The tenant the user id belongs to: the key's (router/usage/budgets.py subject)."""
        return self.key.tenant_id

    @property
    def user(self) -> str:
        """The user as the ledger records it: "" for a request that named no user (no user id is
        empty), so that no user shares rows or counters with unnamed traffic."""
        return self.user_id or ""


def cheapest_hosted(catalog: Sequence[ModelCard]) -> dict[tuple[str, str], ModelCard]:
    """(tier, kind) -> the cheapest hosted model of that tier (the savings baseline)."""
    best: dict[tuple[str, str], ModelCard] = {}
    for card in catalog:
        if card.provider == "local":
            continue
        slot = (card.tier, card.kind)
        price = card.input_per_million + card.output_per_million
        if slot not in best or price < best[slot].input_per_million + best[slot].output_per_million:
            best[slot] = card
    return best


@dataclass
class Allowance:
    """What one run holds of its user's budget: the run's BudgetGate."""

    budgets: Budgets
    caller: Caller
    hold: Hold | None = None

    async def refusal(self, spent_usd: float, next_usd: float) -> str | None:
        try:
            return None if await self.cover(spent_usd + next_usd) else OVER_BUDGET
        except StorageUnavailable:
            return "budget store unavailable"

    async def cover(self, usd: float) -> bool:
        """Hold `usd` in total (in the periods the request was admitted in), or False. Raises
        StorageUnavailable when the budget store does not answer."""
        if usd <= 0 or (self.hold is not None and to_nano(usd) <= self.hold.amount):
            return True
        if self.hold is None:
            hold = await self.budgets.reserve(self.caller.user_id, usd, self.caller.admitted,
                                              self.caller.tenant)
        else:
            hold = await self.budgets.top_up(self.hold, usd)
        if hold is None:
            return False
        self.hold = hold
        return True


class Accounting:
    def __init__(self, ledger: Ledger | None, budgets: Budgets, limiter: RateLimiter,
                 catalog: Sequence[ModelCard], shared: SharedState | None = None):
        self.ledger = ledger
        self.budgets = budgets
        self.limiter = limiter
        self.shared = shared  # the Redis of budgets and rate limits, if any
        self.baseline = cheapest_hosted(catalog)
        self._background: set[asyncio.Task[None]] = set()

    async def start(self, key: ApiKeyConfig, user: str | None, operation: str,
                    request_id: str | None = None, content_type: str | None = None,
                    streamed: bool = False, idempotency_key: str | None = None,
                    tier: Tier | None = None) -> Meter:
        """A request's meter, once its key's rate limits admit it, at the tier it asked for (its
        key's default when None; a 403 above the key's max_tier)."""
        caller = Caller(key, user, request_id, time.time(), idempotency_key)
        meter = Meter(self, caller, operation, content_type, streamed, tier=key.tier)
        with meter.closed_on_error():  # a refusal is recorded too
            meter.tier = granted(tier, key.tier, key.max_tier, key.id)
            await self.limiter.admit(key, caller.user_id)
        return meter

    async def budget_status(self, user: str, tenant: str) -> dict[str, float] | None:
        return await self.budgets.status(user, tenant)

    def spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)  # referenced until done, so it is never collected mid-way
        task.add_done_callback(self._background.discard)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for the settlements in flight, at most `timeout_s`."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout_s)

    async def close(self) -> None:
        """Settle what is in flight (what cannot settle in time, its holds' expiry releases),
        write what the ledger buffers, release connections."""
        await self.drain()
        for task in list(self._background):
            task.cancel()
        if self.ledger is not None:
            await self.ledger.close()
        if self.shared is not None:
            await self.shared.client.aclose()


def _free(routes: list[Route], why: str) -> list[Route]:
    """The free candidates, each saying why the paid ones were left out."""
    return [replace(r, candidate=replace(
                r.candidate, reason=f"{why}, downgraded to a free model; {r.candidate.reason}"))
            for r in routes if r.candidate.estimated_cost <= 0]


@dataclass
class Meter:
    accounting: Accounting
    caller: Caller
    operation: str
    content_type: str | None
    streamed: bool
    tier: Tier = "interactive"  # core/tiers.py: the local queue's priority, the spill-over wait
    started: float = field(default_factory=time.perf_counter)
    runs: list[tuple[Reporting, Allowance | None]] = field(default_factory=list)
    embedding: EmbeddingUse | None = None
    shared: bool = False  # served by another request's run (single flight): billed nothing
    cached: bool = False  # served a stored artifact (router/services/artifacts.py): billed nothing
    downgraded: bool = False  # the budget narrowed the ranking to free models
    closed: bool = False
    record_id: str = field(default_factory=new_record_id)  # the ledger's key for this request
    reserved_tokens: int | None = None  # of the token rate limits, once the request's size is known

    @property
    def user(self) -> str:
        return self.caller.user

    async def reserve(self, routes: list[Route], tokens: int) -> tuple[list[Route], Allowance | None]:
        """What a run of about `tokens` tokens (prompt and max_tokens) may do. The request's first
        run reserves its tokens of the rate limits. The first candidate's estimated cost is held
        now; every later attempt (fallback, retry, continuation) tops the hold up to what the run
        has spent plus that attempt's estimate first, or is skipped. When the budget cannot cover
        the first candidate: only the free candidates (a downgrade), or BudgetExceeded. When the
        budget store does not answer, the free candidates too (the learner is served, no money is
        spent unchecked), or StorageUnavailable (503) when there are none."""
        await self.reserve_tokens(tokens)
        budget = self.accounting.budgets.policy(self.caller.user_id)
        if budget is None or not routes:
            return routes, None
        allowance = Allowance(self.accounting.budgets, self.caller)
        first = routes[0].candidate.estimated_cost
        try:
            covered = await allowance.cover(first)
        except StorageUnavailable:
            unchecked = _free(routes, "budget store unavailable")
            if not unchecked:
                raise
            self.downgraded = True
            return unchecked, allowance
        if covered:
            return routes, allowance
        free = _free(routes, "budget exhausted")
        if free and budget.on_exhausted == "downgrade":
            self.downgraded = True
            return free, allowance
        raise BudgetExceeded(f"the spending budget of {self.whose()} cannot cover this request "
                             f"(estimated ${first:.6f}); it resets at the start of the next period "
                             "(UTC)" + ("" if free else "; no free local model can serve it"))

    async def reserve_tokens(self, tokens: int) -> None:
        """Reserve the request's estimated tokens of its token rate limits (once per request)."""
        if self.reserved_tokens is None:
            await self.accounting.limiter.reserve(self.caller.key, self.caller.user_id, tokens)
            self.reserved_tokens = tokens

    async def hold(self, usd: float) -> Hold | None:
        """Hold `usd` of the user's budget, or None when it does not fit. Raises
        StorageUnavailable when the budget store does not answer."""
        return await self.accounting.budgets.reserve(self.caller.user_id, usd, self.caller.admitted,
                                                     self.caller.tenant)

    def track(self, run: Reporting, allowance: Allowance | None) -> None:
        self.runs.append((run, allowance))

    def embedded(self, card: ModelCard, tokens: int, cache_hits: int, hold: Hold | None) -> None:
        self.embedding = EmbeddingUse(card, TokenUsage(tokens, 0), cache_hits, hold)

    def budget_limited(self) -> bool:
        return self.accounting.budgets.policy(self.caller.user_id) is not None

    def whose(self) -> str:
        """Whose budget, in words."""
        user = self.caller.user_id
        return f"user {user!r}" if user is not None else "requests without a user id"

    @contextlib.contextmanager
    def closed_on_error(self) -> Iterator[None]:
        """Close the meter with the error if the block raises (the success path closes it)."""
        try:
            yield
        except BaseException as error:
            self.close(error)
            raise

    async def watch(self, events: AsyncIterator[T]) -> AsyncIterator[T]:
        """Pass a response stream through; close the meter however it ends."""
        error: BaseException | None = None
        try:
            async for event in events:
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.close(error)

    def close(self, error: BaseException | None = None) -> None:
        """Record the request (once) and settle its budget and rate limits in the background."""
        if self.closed:
            return
        self.closed = True
        outcome, error_type = self._outcome(error)
        status = 200
        if isinstance(error, ServiceError):
            status = status_of(error)
        elif outcome == "client_disconnected":
            status = 499
        elif error is not None:
            status = 500
        spend, settlements, path = self._spend()
        acc = self.accounting
        record = self._record(spend, path, outcome, status, error_type)
        if acc.ledger is not None:
            acc.ledger.record(record)
        metrics.record_request(self._sample(record, error))
        acc.spawn(self._settle(settlements, spend.input_tokens + spend.output_tokens))

    def _outcome(self, error: BaseException | None) -> tuple[Outcome, str | None]:
        if error is None:
            return ("cached" if self.cached else "shared" if self.shared else "success"), None
        if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            return "client_disconnected", None
        if isinstance(error, ServiceError):
            return "error", error.error_type
        return "error", type(error).__name__

    def _spend(self) -> tuple[Spend, list[tuple[Hold, float]], list[str]]:
        spend, settlements, path = Spend(), [], list[str]()
        baseline = self.accounting.baseline
        for run, allowance in self.runs:
            report = run.report()
            for charge in report.charges:
                card = charge.card
                spend.add(card, charge.usage, baseline.get((card.tier, card.kind)), charge.estimated)
            path += report.path
            if allowance is not None and allowance.hold is not None:
                settlements.append((allowance.hold, report.cost_usd))
        if self.embedding is not None:
            use = self.embedding
            spent = spend.add(use.card, use.usage, baseline.get((use.card.tier, use.card.kind)))
            if use.hold is not None:
                settlements.append((use.hold, spent))
        return spend, settlements, path

    def _record(self, spend: Spend, path: list[str], outcome: Outcome, status: int,
                error_type: str | None) -> UsageRecord:
        final = self._final()
        # `day` is the day the request was admitted in: the period its spend counts in.
        return UsageRecord(
            id=self.record_id, request_id=self.caller.request_id,
            idempotency_key=self.caller.idempotency_key, ts=time.time(),
            day=utc_day(self.caller.admitted), user_id=self.user,
            api_key_id=self.caller.key.id, operation=self.operation, content_type=self.content_type,
            provider=final.provider if final else None, model=final.name if final else None,
            input_tokens=spend.input_tokens, output_tokens=spend.output_tokens,
            cost_usd=round(spend.cost_usd, 10),
            hosted_equivalent_usd=round(spend.hosted_equivalent_usd, 10),
            savings_usd=round(spend.savings_usd, 10),
            cache_hits=self.embedding.cache_hits if self.embedding else 0,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 3), outcome=outcome,
            status=status, error_type=error_type, fallback_path=json.dumps(path) if len(path) > 1 else None,
            usage_source="estimated" if spend.estimated else "provider", streamed=self.streamed,
            cached_input_tokens=spend.cached_input_tokens,
            cache_write_tokens=spend.cache_write_tokens, reasoning_tokens=spend.reasoning_tokens,
            tier=self.tier)

    def _sample(self, record: UsageRecord, error: BaseException | None) -> metrics.RequestSample:
        """The record as a metrics sample, with what only the runs know: time to the first token,
        retries and fallbacks. Each failed attempt is counted as a provider error here too."""
        reports = [run.report() for run, _ in self.runs]
        for route, failure in (f for r in reports for f in r.failures):
            status = failure.upstream_status if isinstance(failure, ProviderError) else None
            metrics.record_provider_error(route.provider.name, route.model, type(failure).__name__,
                                          status)
        firsts = [r.first_token_at for r in reports if r.first_token_at is not None]
        budget = "refused" if isinstance(error, BudgetExceeded) else None
        return metrics.RequestSample(
            operation=record.operation, provider=record.provider, model=record.model,
            outcome=record.outcome, status=record.status, latency_s=record.latency_ms / 1000,
            ttft_s=min(firsts) - self.started if firsts else None,
            input_tokens=record.input_tokens, output_tokens=record.output_tokens,
            cost_usd=record.cost_usd, savings_usd=record.savings_usd,
            fallbacks=sum(r.fallbacks for r in reports), retries=sum(r.retries for r in reports),
            budget_action="downgraded" if self.downgraded else budget)

    def _final(self) -> ModelCard | None:
        if self.embedding is not None:
            return self.embedding.card
        served = [r.served_by for r in (run.report() for run, _ in self.runs) if r.served_by]
        return served[-1] if served else None

    async def _settle(self, settlements: list[tuple[Hold, float]], tokens: int) -> None:
        acc = self.accounting
        await acc.limiter.settle(self.caller.key, self.caller.user_id, self.reserved_tokens or 0,
                                 tokens)  # fails open: never raises for an unavailable store
        for hold, usd in settlements:
            await self._settle_hold(hold, usd)

    async def _settle_hold(self, hold: Hold, usd: float) -> None:
        """Settle, retrying while the budget store is unavailable; until then the hold keeps the
        estimate counted, and once it expires, the spend is missing from the counters (logged)."""
        budgets = self.accounting.budgets
        give_up = time.monotonic() + budgets.hold_ttl_s
        delay = 0.5
        while True:
            try:
                await budgets.settle(hold, usd)
                return
            except StorageUnavailable as error:
                wait = max(delay, error.retry_after or 0.0)
                if time.monotonic() + wait > give_up:
                    log.error("could not settle the budget of request %s (%s): $%.6f not counted",
                              self.record_id, error.message, usd)
                    return
                await asyncio.sleep(wait)
                delay = min(delay * 2, 30.0)
