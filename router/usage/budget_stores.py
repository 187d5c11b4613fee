"""Where budgets keep their counters: each counter (a user's UTC day, week or month) keeps the settled
spend, in integer nano-dollars, and the holds of requests in flight. A hold is taken, or topped up,
only if every counter it is on stays within its limit with everything settled and held, checked and
taken atomically. A hold expires `ttl_s` after it was last taken or topped up (Redis: a key per hold,
with a TTL; memory: swept), and counters are forgotten `ttl_s` after their last write.

MemoryBudgetStore keeps one replica's counters; RedisBudgetStore shares them between replicas, through
the shared-state breaker (router/usage/sharedstate.py)."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from router.usage.periods import Window
from router.usage.sharedstate import SharedState


@dataclass(frozen=True)
class Counter:
    key: str  # whose, then the period's window: "<user>:d:2026-11-25", "<user>:w:2026-W48", ...
    window: Window
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
