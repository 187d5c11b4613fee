"""One request's accounting, from admission to its ledger record.

`Accounting.start()` admits a request (rate limits) and returns its `Meter`. The meter holds the
budget reservations made for each run over the providers, and `close()` (synchronous, so that it can
run when a client disconnects mid-stream) turns the runs' usage into one ledger record, then settles
the reservations and charges the tokens to the rate limits in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis

from deployments.config import ApiKeyConfig
from deployments.llm.protocol import Usage
from models.catalog import ModelCard
from router.errors import BudgetExceeded, ServiceError, status_of
from router.pricing import cost
from router.ratelimit import RateLimiter
from router.usage.budgets import NANO, Budgets, Hold
from router.usage.ledger import Ledger, Outcome, UsageRecord, utc_day

if TYPE_CHECKING:
    from router.chat import Route
    from router.fallback import Run

log = logging.getLogger("ray.serve")
T = TypeVar("T")
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Caller:
    key: ApiKeyConfig
    user: str
    request_id: str


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
    """What one run has reserved of its user's budget."""

    meter: Meter
    hold: Hold | None = None

    async def covers(self, usd: float) -> bool:
        held = self.hold.amount / NANO if self.hold else 0.0
        if usd <= held:
            return True
        extra = await self.meter.hold(usd - held)
        if extra is None:
            return False
        self.hold = Hold(extra.counters, extra.amount + (self.hold.amount if self.hold else 0))
        return True

    async def route(self, route: Route) -> bool:
        return await self.covers(route.candidate.estimated_cost)


class Accounting:
    def __init__(self, ledger: Ledger | None, budgets: Budgets, limiter: RateLimiter,
                 catalog: Sequence[ModelCard]):
        self.ledger = ledger
        self.budgets = budgets
        self.limiter = limiter
        self.baseline = cheapest_hosted(catalog)
        self._background: set[asyncio.Task[None]] = set()

    async def start(self, key: ApiKeyConfig, user: str | None, operation: str,
                    request_id: str | None = None, content_type: str | None = None,
                    streamed: bool = False) -> Meter:
        caller = Caller(key, user or ANONYMOUS, request_id or uuid.uuid4().hex)
        meter = Meter(self, caller, operation, content_type, streamed)
        with meter.closed_on_error():
            await self.limiter.admit(key, caller.user)
        return meter

    def spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)  # referenced until done, so it is never collected mid-way
        task.add_done_callback(self._background.discard)


@dataclass
class Spend:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    hosted_equivalent_usd: float = 0.0
    savings_usd: float = 0.0
    estimated: bool = False

    def add(self, card: ModelCard, usage: Usage, baseline: ModelCard | None,
            estimated: bool = False) -> float:
        spent = cost(card, usage)
        self.input_tokens += usage.prompt_tokens
        self.output_tokens += usage.completion_tokens
        self.cost_usd += spent
        if card.provider == "local" and baseline is not None:
            equivalent = cost(baseline, usage)
            self.hosted_equivalent_usd += equivalent
            self.savings_usd += equivalent - spent
        self.estimated = self.estimated or estimated
        return spent


@dataclass
class Meter:
    accounting: Accounting
    caller: Caller
    operation: str
    content_type: str | None
    streamed: bool
    started: float = field(default_factory=time.perf_counter)
    runs: list[tuple[Run, Allowance | None]] = field(default_factory=list)
    embedding: tuple[ModelCard, Usage, int, Hold | None] | None = None
    shared: bool = False  # served by another request's run (single flight): billed nothing
    closed: bool = False

    @property
    def user(self) -> str:
        return self.caller.user

    async def reserve(self, routes: list[Route]) -> tuple[list[Route], Allowance | None]:
        """What a run may spend. The first candidate's estimate is reserved now; a fallback to a
        costlier candidate tops the reservation up first (or skips it). When the budget cannot
        cover the first candidate: only the free candidates (a downgrade), or BudgetExceeded."""
        budget = self.accounting.budgets.policy(self.user)
        if budget is None or not routes:
            return routes, None
        allowance = Allowance(self)
        first = routes[0].candidate.estimated_cost
        if await allowance.covers(first):
            return routes, allowance
        free = [replace(r, candidate=replace(
                    r.candidate, reason=f"budget exhausted, downgraded to a free model; "
                                        f"{r.candidate.reason}"))
                for r in routes if r.candidate.estimated_cost <= 0]
        if free and budget.on_exhausted == "downgrade":
            return free, allowance
        raise BudgetExceeded(f"the spending budget of user {self.user!r} cannot cover this request "
                             f"(estimated ${first:.6f}); it resets at the start of the next period "
                             "(UTC)" + ("" if free else "; no free local model can serve it"))

    async def hold(self, usd: float) -> Hold | None:
        try:
            return await self.accounting.budgets.reserve(self.user, usd)
        except (aioredis.RedisError, OSError) as error:  # cannot check: do not spend
            log.warning("budget store unavailable (%s); treating as exhausted", type(error).__name__)
            return None

    def track(self, run: Run, allowance: Allowance | None) -> None:
        self.runs.append((run, allowance))

    def embedded(self, card: ModelCard, tokens: int, cache_hits: int, hold: Hold | None) -> None:
        self.embedding = (card, Usage(tokens, 0), cache_hits, hold)

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
        if acc.ledger is not None:
            acc.ledger.record(self._record(spend, path, outcome, status, error_type))
        acc.spawn(self._settle(settlements, spend.input_tokens + spend.output_tokens))

    def _outcome(self, error: BaseException | None) -> tuple[Outcome, str | None]:
        if error is None:
            return ("shared" if self.shared else "success"), None
        if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            return "client_disconnected", None
        if isinstance(error, ServiceError):
            return "error", error.error_type
        return "error", type(error).__name__

    def _spend(self) -> tuple[Spend, list[tuple[Hold, float]], list[str]]:
        spend, settlements, path = Spend(), [], []
        baseline = self.accounting.baseline
        for run, allowance in self.runs:
            run_cost = 0.0
            for attempt in run.attempts:
                card = attempt.route.candidate.card
                run_cost += spend.add(card, attempt.billed(), baseline.get((card.tier, card.kind)),
                                      attempt.usage is None and not attempt.skipped)
                path.append(attempt.describe())
            if allowance is not None and allowance.hold is not None:
                settlements.append((allowance.hold, run_cost))
        if self.embedding is not None:
            card, usage, _, hold = self.embedding
            spent = spend.add(card, usage, baseline.get((card.tier, card.kind)))
            if hold is not None:
                settlements.append((hold, spent))
        return spend, settlements, path

    def _record(self, spend: Spend, path: list[str], outcome: Outcome, status: int,
                error_type: str | None) -> UsageRecord:
        final = self._final()
        now = time.time()
        return UsageRecord(
            request_id=self.caller.request_id, ts=now, day=utc_day(now), user_id=self.user,
            api_key_id=self.caller.key.id, operation=self.operation, content_type=self.content_type,
            provider=final.provider if final else None, model=final.name if final else None,
            input_tokens=spend.input_tokens, output_tokens=spend.output_tokens,
            cost_usd=round(spend.cost_usd, 10),
            hosted_equivalent_usd=round(spend.hosted_equivalent_usd, 10),
            savings_usd=round(spend.savings_usd, 10),
            cache_hits=self.embedding[2] if self.embedding else 0,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 3), outcome=outcome,
            status=status, error_type=error_type, fallback_path=UsageRecord.path(path),
            usage_source="estimated" if spend.estimated else "provider", streamed=self.streamed)

    def _final(self) -> ModelCard | None:
        if self.embedding is not None:
            return self.embedding[0]
        tried = [a for run, _ in self.runs for a in run.attempts if not a.skipped]
        return tried[-1].route.candidate.card if tried else None

    async def _settle(self, settlements: list[tuple[Hold, float]], tokens: int) -> None:
        acc = self.accounting
        try:
            for hold, usd in settlements:
                await acc.budgets.settle(hold, usd)
            await acc.limiter.charge(self.caller.key, self.user, tokens)
        except (aioredis.RedisError, OSError) as error:
            log.warning("could not settle request %s (%s)", self.caller.request_id,
                        type(error).__name__)
