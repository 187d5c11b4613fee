"""Per-user budgets in USD per day and per month: reserve the estimated cost before calling a
provider, settle to the real cost after.

Spend is counted per period (UTC day and month) in integer nano-dollars. A reservation is let in only
if it fits under every limit together with everything already spent or reserved, checked and taken
atomically, so concurrent requests cannot overrun a budget: the most a period can exceed its limit
by is what a settled request cost above its own estimate. With Redis (REDIS_URL) every router
replica shares the counters; without it, each replica keeps its own. A replica that dies between
reserve and settle leaves its reservation counted (the safe side) until the period ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import redis.asyncio as aioredis

from core.config import BudgetConfig, BudgetsConfig

NANO = 1_000_000_000
DAY_TTL, MONTH_TTL = 2 * 86_400, 32 * 86_400


Period = Literal["daily", "monthly"]


@dataclass(frozen=True)
class Counter:
    key: str  # "<user>:d:2026-11-25" or "<user>:m:2026-11"
    period: Period
    limit: int  # nano-USD
    ttl_s: int


@dataclass(frozen=True)
class Hold:
    """A reservation, to be settled once the request's real cost is known."""

    counters: tuple[Counter, ...]
    amount: int


class BudgetStore(Protocol):
    async def reserve(self, counters: list[Counter], amount: int) -> bool: ...

    async def adjust(self, counters: list[Counter], delta: int) -> None: ...

    async def spent(self, counters: list[Counter]) -> list[int]: ...


class MemoryBudgetStore:
    def __init__(self) -> None:
        self._spent: dict[str, int] = {}

    async def reserve(self, counters: list[Counter], amount: int) -> bool:
        # No await between test and take: atomic on the event loop.
        if any(self._spent.get(c.key, 0) + amount > c.limit for c in counters):
            return False
        await self.adjust(counters, amount)
        return True

    async def adjust(self, counters: list[Counter], delta: int) -> None:
        for c in counters:
            self._spent[c.key] = self._spent.get(c.key, 0) + delta

    async def spent(self, counters: list[Counter]) -> list[int]:
        return [self._spent.get(c.key, 0) for c in counters]


_RESERVE = """
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') + tonumber(ARGV[1]) > tonumber(ARGV[i + 1]) then
    return 0
  end
end
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[#KEYS + i + 1])
end
return 1
"""


class RedisBudgetStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "learnx:budget:"):
        self._client = client
        self._script = client.register_script(_RESERVE)
        self._prefix = prefix

    async def reserve(self, counters: list[Counter], amount: int) -> bool:
        args = [amount, *(c.limit for c in counters), *(c.ttl_s for c in counters)]
        return bool(await self._script(keys=[self._prefix + c.key for c in counters], args=args))

    async def adjust(self, counters: list[Counter], delta: int) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for c in counters:
                pipe.incrby(self._prefix + c.key, delta)
                pipe.expire(self._prefix + c.key, c.ttl_s)
            await pipe.execute()

    async def spent(self, counters: list[Counter]) -> list[int]:
        values = await self._client.mget([self._prefix + c.key for c in counters])
        return [int(v or 0) for v in values]


class Budgets:
    def __init__(self, config: BudgetsConfig, store: BudgetStore,
                 clock: Callable[[], float] = time.time):
        self._config = config
        self._store = store
        self._clock = clock

    def policy(self, user: str) -> BudgetConfig | None:
        """The user's budget, or None when their spend is not limited."""
        budget = self._config.for_user(user)
        return budget if budget.limited() else None

    async def reserve(self, user: str, usd: float) -> Hold | None:
        """Reserve `usd` for `user`, or None when it does not fit the budget."""
        counters = self._counters(user)
        amount = to_nano(usd)
        if not counters or await self._store.reserve(counters, amount):
            return Hold(tuple(counters), amount)
        return None

    async def settle(self, hold: Hold, usd: float) -> None:
        delta = to_nano(usd) - hold.amount
        if delta and hold.counters:
            await self._store.adjust(list(hold.counters), delta)

    async def status(self, user: str) -> dict[str, float] | None:
        """Spent (including reservations) and limits this period, in USD."""
        counters = self._counters(user)
        if not counters:
            return None
        spent = await self._store.spent(counters)
        out: dict[str, float] = {}
        for counter, value in zip(counters, spent, strict=True):
            out[f"{counter.period}_limit_usd"] = counter.limit / NANO
            out[f"{counter.period}_spent_usd"] = value / NANO
        return out

    def _counters(self, user: str) -> list[Counter]:
        budget = self._config.for_user(user)
        day = time.strftime("%Y-%m-%d", time.gmtime(self._clock()))
        counters = []
        if budget.daily_usd is not None:
            counters.append(Counter(f"{user}:d:{day}", "daily", to_nano(budget.daily_usd), DAY_TTL))
        if budget.monthly_usd is not None:
            counters.append(Counter(f"{user}:m:{day[:7]}", "monthly", to_nano(budget.monthly_usd),
                                    MONTH_TTL))
        return counters


def to_nano(usd: float) -> int:
    return round(usd * NANO)
