"""Per-user budgets in USD per day and per month: hold the estimated cost before calling a provider,
settle to the real cost after.

Each counter (a user's UTC day or month) keeps the settled spend, in integer nano-dollars, and the
holds of requests in flight. A hold is taken, or topped up, only if every counter it is on stays
within its limit with everything settled and held, checked and taken atomically: concurrent
requests cannot overrun a budget. A request's spend counts in the periods it was admitted in, also
when it runs across midnight. A hold expires `hold_ttl_s` after it was last taken or topped up, so
the hold of a replica that died before settling is released (Redis: a key per hold, with a TTL;
memory: swept). A memory store starts empty: it is seeded once from the ledger's spend of the
current periods before its first use.

With Redis (REDIS_URL) every router replica shares the counters, behind the shared-state breaker;
when Redis does not answer, budgets fail closed: StorageUnavailable (503,
`budget_store_unavailable`), never a 402 or a silent downgrade. Without Redis each replica keeps its
own counters, and forgets those of past periods."""

from __future__ import annotations

import asyncio
import functools
import heapq
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal, Protocol, TypeVar

from core.config import BudgetConfig, BudgetsConfig
from core.errors import StorageUnavailable
from router.sharedstate import SharedState, StateUnavailable

NANO = 1_000_000_000
GRACE_S = 86_400  # a counter outlives its period by a day (requests admitted before its end settle)
SEED_RETRY_S = 5.0
ANONYMOUS = "anonymous"  # requests without a user id: limited only by a budget of this name
T = TypeVar("T")

Period = Literal["daily", "monthly"]
SpendRow = tuple[str, str, float]  # (user, UTC day, USD) from the ledger


@dataclass(frozen=True)
class Counter:
    key: str  # "<user>:d:2026-11-25" or "<user>:m:2026-11"
    period: Period
    limit: int  # nano-USD
    ttl_s: int  # kept this long after each write: until the end of its period, and a day


@dataclass(frozen=True)
class Hold:
    """A reservation of `amount` on each of its counters, until it is settled or expires."""

    id: str
    counters: tuple[Counter, ...]
    amount: int


class BudgetStore(Protocol):
    async def hold(self, hold: Hold, ttl_s: float) -> bool:
        """Hold `hold.amount` on each of its counters (a new hold, or more on an existing one) and
        keep it `ttl_s`, if every counter's settled and held spend then stays within its limit;
        else change nothing and return False."""
        ...

    async def settle(self, hold: Hold, spent: int, ttl_s: float) -> None:
        """Count `spent` on the hold's counters and release the hold (settled all the same if it
        expired). A store that can fail half-way (a timeout after Redis ran it) remembers the
        settlement `ttl_s`, so that a retry adds nothing."""
        ...

    async def usage(self, counters: Sequence[Counter]) -> list[tuple[int, int]]:
        """(settled, held) per counter."""
        ...


class Expiries:
    """When each key expires, popped once due: a heap whose stale entries (a key given a new
    expiry, or discarded) are skipped, and dropped whenever they outnumber the live ones."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def set(self, key: str, at: float) -> None:
        self._at[key] = at
        heapq.heappush(self._heap, (at, key))
        if len(self._heap) > 2 * len(self._at) + 64:
            self._heap = [(when, k) for k, when in self._at.items()]
            heapq.heapify(self._heap)

    def discard(self, key: str) -> None:
        self._at.pop(key, None)

    def due(self, now: float) -> list[str]:
        found = []
        while self._heap and self._heap[0][0] <= now:
            at, key = heapq.heappop(self._heap)
            if self._at.get(key) == at:
                del self._at[key]
                found.append(key)
        return found


class MemoryBudgetStore:
    """One replica's counters. No await between test and take: atomic on the event loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._spent: dict[str, int] = {}  # counter key -> settled
        self._holds: dict[str, Hold] = {}  # hold id -> the hold
        self._held: dict[str, int] = {}  # counter key -> held by live holds
        self._spent_expiries = Expiries()  # counter keys
        self._hold_expiries = Expiries()  # hold ids

    def entries(self) -> int:
        """How many things this store remembers (its memory use)."""
        return (len(self._spent) + len(self._holds) + len(self._held) + len(self._spent_expiries)
                + len(self._hold_expiries))

    async def hold(self, hold: Hold, ttl_s: float) -> bool:
        now = self._sweep()
        current = self._holds[hold.id].amount if hold.id in self._holds else 0
        extra = hold.amount - current
        if extra > 0 and any(self._used(c.key) + extra > c.limit for c in hold.counters):
            return False
        self._release(hold.id)
        kept = replace(hold, amount=max(hold.amount, current))
        self._holds[hold.id] = kept
        self._hold_expiries.set(hold.id, now + ttl_s)
        for c in hold.counters:
            self._held[c.key] = self._held.get(c.key, 0) + kept.amount
        return True

    async def settle(self, hold: Hold, spent: int, ttl_s: float) -> None:
        # Nothing here fails half-way: a settlement is never retried, so none is remembered.
        now = self._sweep()
        self._release(hold.id)
        self._hold_expiries.discard(hold.id)
        if spent:
            for c in hold.counters:
                self._spent[c.key] = self._spent.get(c.key, 0) + spent
                self._spent_expiries.set(c.key, now + c.ttl_s)

    async def usage(self, counters: Sequence[Counter]) -> list[tuple[int, int]]:
        self._sweep()
        return [(self._spent.get(c.key, 0), self._held.get(c.key, 0)) for c in counters]

    def _used(self, key: str) -> int:
        return self._spent.get(key, 0) + self._held.get(key, 0)

    def _release(self, hold_id: str) -> None:
        hold = self._holds.pop(hold_id, None)
        if hold is None:
            return
        for c in hold.counters:
            left = self._held[c.key] - hold.amount
            if left:
                self._held[c.key] = left
            else:
                del self._held[c.key]

    def _sweep(self) -> float:
        """Release expired holds; forget counters of past periods."""
        now = self._clock()
        for hold_id in self._hold_expiries.due(now):
            self._release(hold_id)
        for key in self._spent_expiries.due(now):
            del self._spent[key]
        return now


# Keys: the counter (settled nano-USD), the counter's index of holds (a set of hold ids), and one
# key per hold (its amount; "settled" once settled), whose TTL releases an abandoned hold.
_HOLD = """
local amount, prefix, id = tonumber(ARGV[1]), ARGV[3], ARGV[4]
local current = redis.call('GET', KEYS[1])
if current == 'settled' then return 0 end
local extra = amount - tonumber(current or '0')
if extra > 0 then
  for i = 2, #KEYS do
    local used, index = tonumber(redis.call('GET', KEYS[i]) or '0'), KEYS[i] .. ':holds'
    for _, other in ipairs(redis.call('SMEMBERS', index)) do
      local held = redis.call('GET', prefix .. other)
      if held and held ~= 'settled' then used = used + tonumber(held)
      else redis.call('SREM', index, other) end
    end
    if used + extra > tonumber(ARGV[3 + 2 * (i - 1)]) then return 0 end
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i] .. ':holds', id)
  redis.call('EXPIRE', KEYS[i] .. ':holds', ARGV[4 + 2 * (i - 1)])
end
return 1
"""

_SETTLE = """
if redis.call('GET', KEYS[1]) == 'settled' then return 0 end
redis.call('SET', KEYS[1], 'settled', 'PX', ARGV[3])
for i = 2, #KEYS do
  redis.call('SREM', KEYS[i] .. ':holds', ARGV[2])
  if tonumber(ARGV[1]) ~= 0 then
    redis.call('INCRBY', KEYS[i], ARGV[1])
    redis.call('EXPIRE', KEYS[i], ARGV[2 + i])
  end
end
return 1
"""

_USAGE = """
local out = {}
for i = 1, #KEYS do
  local held, index = 0, KEYS[i] .. ':holds'
  for _, other in ipairs(redis.call('SMEMBERS', index)) do
    local amount = redis.call('GET', ARGV[1] .. other)
    if amount and amount ~= 'settled' then held = held + tonumber(amount) end
  end
  out[i] = {tonumber(redis.call('GET', KEYS[i]) or '0'), held}
end
return out
"""


class RedisBudgetStore:
    def __init__(self, state: SharedState, prefix: str = "learnx:budget:"):
        self._state = state
        self._hold = state.client.register_script(_HOLD)
        self._settle = state.client.register_script(_SETTLE)
        self._usage = state.client.register_script(_USAGE)
        self._prefix = prefix

    def hold_key(self, hold_id: str) -> str:
        return f"{self._prefix}hold:{hold_id}"

    async def hold(self, hold: Hold, ttl_s: float) -> bool:
        args: list[int | str] = [hold.amount, round(ttl_s * 1000), self.hold_key(""), hold.id]
        for c in hold.counters:
            args += [c.limit, c.ttl_s]
        keys = [self.hold_key(hold.id), *(self._prefix + c.key for c in hold.counters)]
        return bool(await self._state.run(lambda: self._hold(keys=keys, args=args)))

    async def settle(self, hold: Hold, spent: int, ttl_s: float) -> None:
        args: list[int | str] = [spent, hold.id, round(ttl_s * 1000), *(c.ttl_s for c in hold.counters)]
        keys = [self.hold_key(hold.id), *(self._prefix + c.key for c in hold.counters)]
        await self._state.run(lambda: self._settle(keys=keys, args=args))

    async def usage(self, counters: Sequence[Counter]) -> list[tuple[int, int]]:
        keys = [self._prefix + c.key for c in counters]
        found = await self._state.run(lambda: self._usage(keys=keys, args=[self.hold_key("")]))
        return [(int(spent), int(held)) for spent, held in found]


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

    def policy(self, user: str) -> BudgetConfig | None:
        """The user's budget, or None when their spend is not limited. The default budget is for
        identified users: requests without a user id have only a budget named `anonymous`."""
        budget = (self._config.users.get(user, BudgetConfig()) if user == ANONYMOUS
                  else self._config.for_user(user))
        return budget if budget.limited() else None

    async def reserve(self, user: str, usd: float, at: float | None = None) -> Hold | None:
        """Hold `usd` for `user` in the periods of time `at` (now by default), or None when it does
        not fit the budget."""
        hold = Hold(uuid.uuid4().hex, tuple(self._counters(user, at)), to_nano(usd))
        return await self._take(hold)

    async def top_up(self, hold: Hold, usd: float) -> Hold | None:
        """Hold `usd` in total on the same counters (the same periods, even after midnight), or
        None when the more it needs does not fit."""
        return await self._take(replace(hold, amount=max(hold.amount, to_nano(usd))))

    async def settle(self, hold: Hold, usd: float) -> None:
        if hold.counters:
            await self._call(lambda: self._store.settle(hold, to_nano(usd), self.hold_ttl_s))

    async def status(self, user: str) -> dict[str, float] | None:
        """Settled spend, spend held by requests in flight, and limits this period, in USD."""
        counters = self._counters(user)
        if not counters:
            return None
        found = await self._call(lambda: self._store.usage(counters))
        out: dict[str, float] = {}
        for counter, (spent, held) in zip(counters, found, strict=True):
            out[f"{counter.period}_limit_usd"] = counter.limit / NANO
            out[f"{counter.period}_spent_usd"] = spent / NANO
            out[f"{counter.period}_held_usd"] = held / NANO
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
            today = utc_day(self._clock())
            try:
                rows = await self._seed(today[:7] + "-01")
            except StorageUnavailable as error:
                self._seed_again_at = self._clock() + SEED_RETRY_S
                raise unavailable(f"{waiting} ({error.message})", SEED_RETRY_S) from None
            for counter, spent in self._seeded_counters(rows, today).items():
                await self._store.settle(Hold(f"seed:{counter.key}", (counter,), 0), spent,
                                         self.hold_ttl_s)
            self._seed = None

    def _seeded_counters(self, rows: list[SpendRow], today: str) -> dict[Counter, int]:
        totals: dict[Counter, int] = {}
        for user, day, usd in rows:
            for counter in self._counters(user):
                if day == today if counter.period == "daily" else day[:7] == today[:7]:
                    totals[counter] = totals.get(counter, 0) + to_nano(usd)
        return totals

    def _counters(self, user: str, at: float | None = None) -> list[Counter]:
        budget = self.policy(user)
        if budget is None:
            return []
        now = self._clock() if at is None else at
        day, day_end, month, month_end = periods(int(now // 86_400))
        counters = []
        if budget.daily_usd is not None:
            counters.append(Counter(f"{user}:d:{day}", "daily", to_nano(budget.daily_usd),
                                    max(1, int(day_end - now)) + GRACE_S))
        if budget.monthly_usd is not None:
            counters.append(Counter(f"{user}:m:{month}", "monthly", to_nano(budget.monthly_usd),
                                    max(1, int(month_end - now)) + GRACE_S))
        return counters


@functools.lru_cache(maxsize=4)
def periods(unix_day: int) -> tuple[str, float, str, float]:
    """The UTC day and month of a day since the epoch, with the Unix times they end."""
    today = date(1970, 1, 1) + timedelta(days=unix_day)
    next_month = (today.replace(day=28) + timedelta(days=4)).replace(day=1)
    month_end = datetime(next_month.year, next_month.month, 1, tzinfo=UTC).timestamp()
    return today.isoformat(), (unix_day + 1) * 86_400.0, today.isoformat()[:7], month_end


def unavailable(reason: str, retry_after: float) -> StorageUnavailable:
    return StorageUnavailable(f"{reason}: budget-limited requests for paid models cannot be "
                              "checked; retry shortly, or use a free local model",
                              code="budget_store_unavailable", retry_after=retry_after)


def utc_day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def to_nano(usd: float) -> int:
    return round(usd * NANO)
