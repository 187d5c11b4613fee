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
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from core.budget_config import ADJECTIVES, BudgetConfig, BudgetsConfig, LevelBudget, Period
from core.errors import BudgetExceeded, StorageUnavailable
from core.ids import new_id
from router.usage.budget_stores import BudgetStore, Counter, Hold, Usage
from router.usage.levels import Levels
from router.usage.periods import PERIODS, window
from router.usage.scopes import NANO, LevelKey, Scope, counters, level_window, to_nano, user_budget
from router.usage.sharedstate import StateUnavailable

SEED_RETRY_S = 5.0
log = logging.getLogger("ray.serve")
T = TypeVar("T")

# (tenant, group or None, user or None, UTC day, USD)
SpendRow = tuple[str | None, str | None, str | None, str, float]


@dataclass(frozen=True)
class Refusal:
    """The counters without room for a request: the levels whose budget it would overrun."""

    counters: tuple[Counter, ...]

    @property
    def action(self) -> str:
        """`refuse` if any of them says so, else `downgrade`."""
        return "refuse" if any(c.action == "refuse" for c in self.counters) else "downgrade"

    @property
    def first(self) -> Counter:
        """The counter to name: the first that refuses, else the first."""
        return next((c for c in self.counters if c.action == "refuse"), self.counters[0])

    def whose(self, scope: Scope) -> str:
        """Whose budget, in words."""
        level = self.first.level
        if level == "tenant":
            return f"tenant {scope.tenant!r}"
        if level == "group":
            return f"group {scope.group!r}"
        if level == "learner_share":
            return f"user {scope.user!r}'s share of group {scope.group!r}"
        return f"user {scope.user!r}" if scope.user is not None else "requests without a user id"

    def error(self, message: str) -> BudgetExceeded:
        counter = self.first
        return BudgetExceeded(message, level=counter.level, period=counter.window.period)

    def resets(self) -> str:
        """When the budget named has room again, in words."""
        occurrence = self.first.window
        if occurrence.period == "term":
            return f"it is the budget of the term {occurrence.first} to {occurrence.last}"
        return "it resets at the start of the next period (UTC)"


class Budgets:
    def __init__(self, config: BudgetsConfig, store: BudgetStore,
                 clock: Callable[[], float] = time.time, hold_ttl_s: float = 900.0,
                 seed: Callable[[str], Awaitable[list[SpendRow]]] | None = None,
                 levels: Levels | None = None,
                 ledger: Callable[[str], Awaitable[list[SpendRow]]] | None = None):
        """`ledger(first_day)`: the ledger's spend per tenant, group, user and day since
        `first_day`: what a level set mid-period starts from; `seed`: the same, for a store that
        starts empty."""
        self._config = config
        self._store = store
        self._clock = clock
        self.hold_ttl_s = hold_ttl_s
        self._seed = seed
        self._ledger = ledger
        self.levels = levels or Levels(config.levels, None)
        self._seeding = asyncio.Lock()
        self._seed_again_at = 0.0  # after a failed seeding, refuse at once until then

    def policy(self, scope: Scope) -> BudgetConfig | None:
        """The per-user budget (router/usage/scopes.py), or None."""
        return user_budget(self._config, scope)

    async def reserve(self, scope: Scope, usd: float, at: float | None = None) -> Hold | Refusal:
        """Hold `usd` on the scope's counters of the periods of time `at` (now by default), or the
        counters without room for it."""
        now = self._clock() if at is None else at
        found = counters(scope, now, self._config, await self.levels.current())
        return await self._take(Hold(new_id(), tuple(found), to_nano(usd)))

    async def top_up(self, hold: Hold, usd: float) -> Hold | Refusal:
        """Hold `usd` in total on the same counters (the same periods, even after midnight), or
        the counters without room for what more it needs."""
        return await self._take(replace(hold, amount=max(hold.amount, to_nano(usd))))

    async def settle(self, hold: Hold, usd: float) -> None:
        if hold.counters:
            await self._call(lambda: self._store.settle(hold, to_nano(usd), self.hold_ttl_s))

    async def status(self, scope: Scope) -> dict[str, float] | None:
        """The user's budget: settled spend, spend held by requests in flight, and limits this
        period, in USD, named by period."""
        own = [c for c in await self._counters(scope) if c.level == "user"]
        if not own:
            return None
        out: dict[str, float] = {}
        for counter, usage in zip(own, await self._call(lambda: self._store.usage(own)),
                                  strict=True):
            name = _adjective(counter.window.period)
            out[f"{name}_limit_usd"] = usage.limit / NANO
            out[f"{name}_spent_usd"] = usage.settled / NANO
            out[f"{name}_held_usd"] = usage.held / NANO
        return out

    async def by_level(self, scope: Scope) -> list[dict[str, Any]]:
        """Every budget the scope spends, one per level and period: its limit, spend and what is
        left."""
        found = await self._counters(scope)
        if not found:
            return []
        usages = await self._call(lambda: self._store.usage(found))
        return [_level_status(scope, c, u) for c, u in zip(found, usages, strict=True)]

    async def of_level(self, key: LevelKey) -> list[dict[str, Any]]:
        """The current period of one level's budget (a user without one: the per-user budget's)."""
        tenant, group, user = key
        level = "group" if group else "user" if user else "tenant"
        found = await self.by_level(Scope(tenant, user, group))
        return [status for status in found if status["level"] == level]

    async def set_level(self, key: LevelKey, budget: LevelBudget | None) -> None:
        """Set a level's budget (None: remove the one set through the API) for every replica; a new
        period's counter starts from the ledger's spend of that period."""
        await self.levels.put(key, budget)
        if budget is not None and self._ledger is not None:
            await self._adopt(key, self._ledger)

    async def _adopt(self, key: LevelKey,
                     ledger: Callable[[str], Awaitable[list[SpendRow]]]) -> None:
        tenant, group, user = key
        level = "group" if group else "user" if user else "tenant"
        found = [c for c in await self._counters(Scope(tenant, user, group)) if c.level == level]
        if not found:
            return
        counter = found[0]
        try:
            rows = await ledger(counter.window.first.isoformat())
        except StorageUnavailable as error:
            log.warning("budget level %s counts from now: %s", key, error.message)
            return
        spent = to_nano(sum(usd for row_tenant, row_group, row_user, day, usd in rows
                            if (row_tenant, row_group if group else None, row_user if user else None)
                            == key and counter.window.holds(day)))
        await self._call(lambda: self._store.adopt(counter, spent))

    async def _counters(self, scope: Scope) -> list[Counter]:
        return counters(scope, self._clock(), self._config, await self.levels.current())

    async def _take(self, hold: Hold) -> Hold | Refusal:
        if not hold.counters:
            return hold
        full = await self._call(lambda: self._store.take(hold, self.hold_ttl_s))
        return Refusal(full) if full else hold

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
            levels = await self.levels.current()
            try:
                rows = await self._seed(_first_day(now, levels.values()))
            except StorageUnavailable as error:
                self._seed_again_at = self._clock() + SEED_RETRY_S
                raise unavailable(f"{waiting} ({error.message})", SEED_RETRY_S) from None
            for counter, spent in self._seeded_counters(rows, now, levels).items():
                await self._store.settle(Hold(f"seed:{counter.key}", (counter,), 0), spent,
                                         self.hold_ttl_s)
            self._seed = None

    def _seeded_counters(self, rows: list[SpendRow], now: float,
                         levels: dict[LevelKey, LevelBudget]) -> dict[Counter, int]:
        """Each current counter's spend: the rows of the days its period holds."""
        totals: dict[Counter, int] = {}
        for tenant, group, user, day, usd in rows:
            for counter in counters(Scope(tenant, user, group), now, self._config, levels):
                if counter.window.holds(day):
                    totals[counter] = totals.get(counter, 0) + to_nano(usd)
        return totals


def _adjective(period: Period) -> str:
    return "term" if period == "term" else ADJECTIVES[period]


def _level_status(scope: Scope, counter: Counter, usage: Usage) -> dict[str, Any]:
    occurrence = counter.window
    return {"level": counter.level, "tenant": scope.tenant,
            "group": scope.group if counter.level in ("group", "learner_share") else None,
            "user": scope.user if counter.level in ("user", "learner_share") else None,
            "period": occurrence.period, "start": occurrence.first.isoformat(),
            "end": occurrence.last.isoformat(), "limit_usd": usage.limit / NANO,
            "spent_usd": usage.settled / NANO, "held_usd": usage.held / NANO,
            "remaining_usd": max(0, usage.limit - usage.settled - usage.held) / NANO,
            "on_exhausted": counter.action}


def _first_day(now: float, levels: Iterable[LevelBudget]) -> str:
    """The first day of every period current at `now`: the ledger's spend is read from there."""
    firsts = [window(period, now).first for period in PERIODS]
    firsts += [level_window(budget, now).first for budget in levels]
    return min(firsts).isoformat()


def unavailable(reason: str, retry_after: float) -> StorageUnavailable:
    return StorageUnavailable(f"{reason}: budget-limited requests for paid models cannot be "
                              "checked; retry shortly, or use a free local model",
                              code="budget_store_unavailable", retry_after=retry_after)
