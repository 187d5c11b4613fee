"""One request's metering, from admission to its ledger record.

`Accounting.start()` admits a request (router/usage/admission.py: its rate limits) and returns its
`Meter`, which keeps what the request's runs (and its embedding call) used. `close()` (synchronous,
so that it can run when a client disconnects mid-stream) turns that into one ledger record and a
metrics sample, then hands the token reservation and the budget holds back to the admission, to
settle to the real usage in the background."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from core import metrics
from core.config import ApiKeyConfig
from core.errors import BudgetExceeded, ProviderError, ServiceError, status_of
from core.generation import TokenUsage
from core.tiers import Tier, granted
from models.catalog import ModelCard
from router.run import spans
from router.run.attempts import Reporting
from router.usage.admission import Admission, Allowance, Caller
from router.usage.budget_stores import Hold
from router.usage.budgets import Budgets
from router.usage.ledger import Ledger
from router.usage.ratelimit import RateLimiter
from router.usage.record import Operation, Outcome, UsageRecord, new_record_id, utc_day
from router.usage.scopes import Scope
from router.usage.sharedstate import SharedState
from router.usage.spend import EmbeddingUse, Spend

T = TypeVar("T")


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


class Accounting:
    def __init__(self, ledger: Ledger | None, budgets: Budgets, limiter: RateLimiter,
                 catalog: Sequence[ModelCard], shared: SharedState | None = None):
        self.ledger = ledger
        self.budgets = budgets
        self.limiter = limiter
        self.shared = shared  # the Redis of budgets and rate limits, if any
        self.baseline = cheapest_hosted(catalog)
        self._background: set[asyncio.Task[None]] = set()

    async def start(self, key: ApiKeyConfig, user: str | None, operation: Operation,
                    request_id: str | None = None, content_type: str | None = None,
                    streamed: bool = False, idempotency_key: str | None = None,
                    tier: Tier | None = None, group: str | None = None) -> Meter:
        """A request's meter, once its key's rate limits admit it, at the tier it asked for (its
        key's default when None; a 403 above the key's max_tier)."""
        caller = Caller(key, user, request_id, time.time(), idempotency_key, group)
        admission = Admission(caller, self.budgets, self.limiter, tier=key.tier)
        meter = Meter(self, admission, operation.value, content_type, streamed)
        with meter.closed_on_error():  # a refusal is recorded too
            admission.tier = granted(tier, key.tier, key.max_tier, key.id)
            await admission.admit()
        return meter

    async def budget_status(self, scope: Scope) -> dict[str, float] | None:
        return await self.budgets.status(scope)

    def ledger_status(self) -> dict[str, int]:
        """This replica's ledger writer: records buffered, dropped, failed writes, dead letters."""
        if self.ledger is None:
            return {}
        stats = self.ledger.stats
        return {"buffered": self.ledger.buffered, "dropped": stats.dropped,
                "write_failures": stats.failures, "dead_lettered": stats.dead_lettered}

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


@dataclass
class Meter:
    accounting: Accounting
    admission: Admission
    operation: str
    content_type: str | None
    streamed: bool
    started: float = field(default_factory=time.perf_counter)
    runs: list[tuple[Reporting, Allowance | None]] = field(default_factory=list)
    embedding: EmbeddingUse | None = None
    shared: bool = False  # served by another request's run (single flight): billed nothing
    cached: bool = False  # served a stored artifact (router/services/artifacts.py): billed nothing
    closed: bool = False
    kept_open: bool = False  # a run that outlives its client closes the meter (release)
    record_id: str = field(default_factory=new_record_id)  # the ledger's key for this request
    resumes: int = 0  # reconnects to the stream's run (router/services/runs.py) while it ran
    stopped: bool = False  # its run was stopped (POST /v1/runs/{id}/cancel)

    @property
    def caller(self) -> Caller:
        return self.admission.caller

    @property
    def tier(self) -> Tier:
        return self.admission.tier

    @property
    def user(self) -> str:
        return self.caller.user

    def track(self, run: Reporting, allowance: Allowance | None) -> None:
        self.runs.append((run, allowance))

    def embedded(self, card: ModelCard, tokens: int, cache_hits: int,
                 allowance: Allowance | None) -> None:
        self.embedding = EmbeddingUse(card, TokenUsage(tokens, 0), cache_hits, allowance)

    @contextlib.contextmanager
    def closed_on_error(self) -> Iterator[None]:
        """Close the meter with the error if the block raises (the success path closes it)."""
        try:
            yield
        except BaseException as error:
            self.close(error)
            raise

    async def watch(self, events: AsyncIterator[T]) -> AsyncGenerator[T, None]:
        """Pass a response stream through; close the meter however it ends, and the stream first
        when it is left early (the client gone), so that what it holds (a run's provider call, a
        place in a shared run) is let go now, not when the garbage collector finds it."""
        error: BaseException | None = None
        try:
            async for event in events:
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                if isinstance(events, AsyncGenerator):
                    await events.aclose()
            finally:
                self.close(error)

    def keep_open(self) -> None:
        """Only `release()` closes the meter from now on: a run shared by identical requests
        (router/services/singleflight.py) goes on when the client that started it leaves, and its
        request's record must hold everything the run spent."""
        self.kept_open = True

    def release(self, error: BaseException | None = None) -> None:
        """The run that kept the meter open has ended: close it."""
        self.kept_open = False
        self.close(error)

    def close(self, error: BaseException | None = None) -> None:
        """Record the request (once) and settle its budget and rate limits in the background."""
        if self.closed or self.kept_open:
            return
        self.closed = True
        outcome, error_type = self._outcome(error)
        status = 200
        if outcome in ("client_disconnected", "stopped"):
            status = 499
        elif isinstance(error, ServiceError):
            status = status_of(error)
        elif error is not None:
            status = 500
        spend, settlements, path = self._spend()
        acc = self.accounting
        record = self._record(spend, path, outcome, status, error_type)
        if acc.ledger is not None:
            acc.ledger.record(record)
        sample = self._sample(record, error)
        metrics.record_request(sample)
        spans.finished(sample, {"learnx.request_id": self.caller.request_id,
                                "learnx.tenant": self.caller.tenant, "learnx.record_id": record.id,
                                "gen_ai.request.stream": self.streamed})
        acc.spawn(self.admission.settle(settlements, spend.input_tokens + spend.output_tokens,
                                        self.record_id))

    def _outcome(self, error: BaseException | None) -> tuple[Outcome, str | None]:
        if error is None:
            return ("cached" if self.cached else "shared" if self.shared else "success"), None
        if self.stopped:
            return "stopped", None
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
            if use.allowance is not None and use.allowance.hold is not None:
                settlements.append((use.allowance.hold, spent))
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
            tier=self.tier, resumes=self.resumes, group_id=self.caller.group)

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
            budget_action="downgraded" if self.admission.downgraded else budget,
            cached_input_tokens=record.cached_input_tokens,
            cache_write_tokens=record.cache_write_tokens, reasoning_tokens=record.reasoning_tokens)

    def _final(self) -> ModelCard | None:
        if self.embedding is not None:
            return self.embedding.card
        served = [r.served_by for r in (run.report() for run, _ in self.runs) if r.served_by]
        return served[-1] if served else None
