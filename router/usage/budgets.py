"""Per-user budgets in USD per period (day, week, month: router/usage/periods.py): hold the
estimated cost before calling a provider, settle to the real cost after.

A request holds its estimate on its caller's counters (router/usage/budget_stores.py: one per
period of each budget that applies to its `Scope`, in integer nano-dollars), checked and taken
atomically against everything settled and held, so concurrent requests cannot overrun a budget;
more is held before each later attempt, and the real cost settles the hold. A request's spend
counts in the periods it was admitted in, also when it runs across midnight. A hold expires
`hold_ttl_s` after it was last taken or topped up, so the hold of a replica that died before
settling is released. A memory store starts empty: it is seeded once from the ledger's spend of the
current periods before its first use.

With Redis (REDIS_URL) every router replica shares the counters, behind the shared-state breaker;
when Redis does not answer, budgets fail closed on money, not on the learner: a budget-limited
request is served by the free local models (a downgrade its route's reason names, Admission.routes),
and only one no free model can serve gets StorageUnavailable (503, `budget_store_unavailable`),
never a 402. Without Redis each replica keeps its own counters, and forgets those of past periods."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from core.budget_config import ADJECTIVES, BudgetConfig, BudgetsConfig
from core.errors import StorageUnavailable
from core.ids import new_id
from router.usage.budget_stores import BudgetStore, Counter, Hold
from router.usage.periods import PERIODS, window
from router.usage.sharedstate import StateUnavailable

NANO = 1_000_000_000
GRACE_S = 86_400  # a counter outlives its period by a day (requests admitted before its end settle)
SEED_RETRY_S = 5.0
ANONYMOUS = "anonymous"  # requests without a user id: limited only by a budget of this name
UNNAMED = "\x00"  # their counters' name: no user id can hold a control character
T = TypeVar("T")

SpendRow = tuple[str | None, str | None, str, float]  # (tenant, user or None, UTC day, USD)


@dataclass(frozen=True)
class Scope:
    """Whose budgets a request spends: its tenant's (None: no tenant), its user's within the tenant
    (None: the request named no user) and its group's (a class, within the tenant)."""

    tenant: str | None
    user: str | None
    group: str | None = None

    def subject(self) -> str:
        """The user's counters' name: the user (or the unnamed requests) within the tenant. User
        ids belong to the tenant of the key that sent them; no id holds the control characters
        used here."""
        name = UNNAMED if self.user is None else self.user
        return name if self.tenant is None else f"{self.tenant}\x1f{name}"


class Budgets:
    def __init__(self, config: BudgetsConfig, store: BudgetStore,
                 clock: Callable[[], float] = time.time, hold_ttl_s: float = 900.0,
                 seed: Callable[[str], Awaitable[list[SpendRow]]] | None = None):
        """`seed(first_day)`: the ledger's spend per user and day since `first_day`, for a store
        that starts empty."""
        self._config = config
        self._store = store
        self._clock = clock
        self.hold_ttl_s = hold_ttl_s
        self._seed = seed
        self._seeding = asyncio.Lock()
        self._seed_again_at = 0.0  # after a failed seeding, refuse at once until then

    def policy(self, scope: Scope) -> BudgetConfig | None:
        """The user's budget, or None when their spend is not limited. The default budget is for
        identified users: requests without a user id have only a budget named `anonymous` (with
        counters of their own: a user named so is a user like any other)."""
        budget = (self._config.users.get(ANONYMOUS, BudgetConfig()) if scope.user is None
                  else self._config.for_user(scope.user))
        return budget if budget.limited() else None

    async def reserve(self, scope: Scope, usd: float, at: float | None = None) -> Hold | None:
        """Hold `usd` on the scope's counters of the periods of time `at` (now by default), or None
        when it does not fit one of them."""
        hold = Hold(new_id(), tuple(self._counters(scope, at)), to_nano(usd))
        return await self._take(hold)

    async def top_up(self, hold: Hold, usd: float) -> Hold | None:
        """Hold `usd` in total on the same counters (the same periods, even after midnight), or
        None when the more it needs does not fit."""
        return await self._take(replace(hold, amount=max(hold.amount, to_nano(usd))))

    async def settle(self, hold: Hold, usd: float) -> None:
        if hold.counters:
            await self._call(lambda: self._store.settle(hold, to_nano(usd), self.hold_ttl_s))

    async def status(self, scope: Scope) -> dict[str, float] | None:
        """Settled spend, spend held by requests in flight, and limits this period, in USD."""
        counters = self._counters(scope)
        if not counters:
            return None
        found = await self._call(lambda: self._store.usage(counters))
        out: dict[str, float] = {}
        for counter, (spent, held) in zip(counters, found, strict=True):
            name = ADJECTIVES[counter.window.period]
            out[f"{name}_limit_usd"] = counter.limit / NANO
            out[f"{name}_spent_usd"] = spent / NANO
            out[f"{name}_held_usd"] = held / NANO
        return out

    async def _take(self, hold: Hold) -> Hold | None:
        if not hold.counters:
            return hold
        return hold if await self._call(lambda: self._store.hold(hold, self.hold_ttl_s)) else None

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T:
        try:
            await self._seeded()
            return await work()
        except StateUnavailable as error:
            raise unavailable(error.reason, error.retry_after) from None

    async def _seeded(self) -> None:
        if self._seed is None:
            return
        async with self._seeding:
            if self._seed is None:
                return
            waiting = "the budget store is waiting for the usage ledger's spend"
            if self._clock() < self._seed_again_at:
                raise unavailable(waiting, self._seed_again_at - self._clock())
            now = self._clock()
            since = min(window(period, now).first for period in PERIODS).isoformat()
            try:
                rows = await self._seed(since)
            except StorageUnavailable as error:
                self._seed_again_at = self._clock() + SEED_RETRY_S
                raise unavailable(f"{waiting} ({error.message})", SEED_RETRY_S) from None
            for counter, spent in self._seeded_counters(rows, now).items():
                await self._store.settle(Hold(f"seed:{counter.key}", (counter,), 0), spent,
                                         self.hold_ttl_s)
            self._seed = None

    def _seeded_counters(self, rows: list[SpendRow], now: float) -> dict[Counter, int]:
        """Each current counter's spend: the rows of the days its period holds."""
        totals: dict[Counter, int] = {}
        for tenant, user, day, usd in rows:
            for counter in self._counters(Scope(tenant, user), now):
                if counter.window.holds(day):
                    totals[counter] = totals.get(counter, 0) + to_nano(usd)
        return totals

    def _counters(self, scope: Scope, at: float | None = None) -> list[Counter]:
        budget = self.policy(scope)
        if budget is None:
            return []
        now = self._clock() if at is None else at
        counters = []
        for period, usd in budget.limits().items():
            occurrence = window(period, now)
            counters.append(Counter(f"{scope.subject()}:{occurrence.key}", occurrence,
                                    to_nano(usd), max(1, int(occurrence.end - now)) + GRACE_S))
        return counters


def unavailable(reason: str, retry_after: float) -> StorageUnavailable:
    return StorageUnavailable(f"{reason}: budget-limited requests for paid models cannot be "
                              "checked; retry shortly, or use a free local model",
                              code="budget_store_unavailable", retry_after=retry_after)


def to_nano(usd: float) -> int:
    return round(usd * NANO)
