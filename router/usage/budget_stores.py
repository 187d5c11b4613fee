"""Where budgets keep their counters: each counter (one level's period: a user's UTC day, a group's
term, ...) keeps the settled spend, in integer nano-dollars, and the holds of requests in flight. A
hold is taken, or topped up, only if every counter it is on stays within its limit with everything
settled and held, checked and taken atomically; else the counters without room are named. A hold
expires `ttl_s` after it was last taken or topped up (Redis: a key per hold, with a TTL; memory:
swept), and counters are forgotten `ttl_s` after their last write.

A counter may be a share of a pool (`members`: a learner's share of their group's budget): its
limit is then divided by the number of the pool's members, the counter itself counted; a hold taken
on it, or spend settled on it, makes it a member until the pool's period ends.

MemoryBudgetStore keeps one replica's counters; RedisBudgetStore shares them between replicas, through
the shared-state breaker (router/usage/sharedstate.py)."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from core.budget_config import Action
from router.usage.periods import Window
from router.usage.sharedstate import SharedState


@dataclass(frozen=True)
class Counter:
    key: str  # whose, then the period's window: "<user>:d:2026-11-25", "<user>:w:2026-W48", ...
    window: Window
    limit: int  # nano-USD (a share's: the whole pool's)
    ttl_s: int  # kept this long after each write: until the end of its period, and a day
    level: str = "user"  # tenant | group | learner_share | user: whose budget, for the caller
    action: Action = "downgrade"  # when it has no room for a request
    members: str | None = None  # a share's pool: the key of the set of its members

    def share(self, members: int) -> int:
        """The counter's limit among `members` members of its pool (itself included)."""
        return self.limit if self.members is None else self.limit // max(1, members)


@dataclass(frozen=True)
class Hold:
    """A reservation of `amount` on each of its counters, until it is settled or expires."""

    id: str
    counters: tuple[Counter, ...]
    amount: int


@dataclass(frozen=True)
class Usage:
    settled: int
    held: int
    limit: int  # a share's: its part of the pool now


class BudgetStore(Protocol):
    async def take(self, hold: Hold, ttl_s: float) -> tuple[Counter, ...]:
        """Hold `hold.amount` on each of its counters (a new hold, or more on an existing one) and
        keep it `ttl_s`, if every counter's settled and held spend then stays within its limit;
        else change nothing and return the counters without room (a settled hold: all of them)."""
        ...

    async def settle(self, hold: Hold, spent: int, ttl_s: float) -> None:
        """Count `spent` on the hold's counters and release the hold (settled all the same if it
        expired). A store that can fail half-way (a timeout after Redis ran it) remembers the
        settlement `ttl_s`, so that a retry adds nothing."""
        ...

    async def usage(self, counters: Sequence[Counter]) -> list[Usage]:
        ...

    async def adopt(self, counter: Counter, spent: int) -> None:
        """Start a counter at `spent` settled, if it has no settled spend yet (a level set mid-period,
        seeded from the ledger)."""
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
        self._members: dict[str, set[str]] = {}  # pool -> its members' counter keys
        self._spent_expiries = Expiries()  # counter keys and pools
        self._hold_expiries = Expiries()  # hold ids

    def entries(self) -> int:
        """How many things this store remembers (its memory use)."""
        return (len(self._spent) + len(self._holds) + len(self._held) + len(self._members)
                + len(self._spent_expiries) + len(self._hold_expiries))

    async def take(self, hold: Hold, ttl_s: float) -> tuple[Counter, ...]:
        now = self._sweep()
        current = self._holds[hold.id].amount if hold.id in self._holds else 0
        extra = hold.amount - current
        if extra > 0:
            full = tuple(c for c in hold.counters if self._used(c.key) + extra > self._limit(c))
            if full:
                return full
        self._release(hold.id)
        kept = replace(hold, amount=max(hold.amount, current))
        self._holds[hold.id] = kept
        self._hold_expiries.set(hold.id, now + ttl_s)
        for c in hold.counters:
            self._held[c.key] = self._held.get(c.key, 0) + kept.amount
            self._join(c, now)
        return ()

    async def settle(self, hold: Hold, spent: int, ttl_s: float) -> None:
        # Nothing here fails half-way: a settlement is never retried, so none is remembered.
        now = self._sweep()
        self._release(hold.id)
        self._hold_expiries.discard(hold.id)
        if spent:
            for c in hold.counters:
                self._spent[c.key] = self._spent.get(c.key, 0) + spent
                self._spent_expiries.set(c.key, now + c.ttl_s)
                self._join(c, now)

    async def usage(self, counters: Sequence[Counter]) -> list[Usage]:
        self._sweep()
        return [Usage(self._spent.get(c.key, 0), self._held.get(c.key, 0), self._limit(c))
                for c in counters]

    async def adopt(self, counter: Counter, spent: int) -> None:
        now = self._sweep()
        if spent and counter.key not in self._spent:
            self._spent[counter.key] = spent
            self._spent_expiries.set(counter.key, now + counter.ttl_s)

    def _used(self, key: str) -> int:
        return self._spent.get(key, 0) + self._held.get(key, 0)

    def _limit(self, counter: Counter) -> int:
        if counter.members is None:
            return counter.limit
        members = self._members.get(counter.members, set())
        return counter.share(len(members) + (counter.key not in members))

    def _join(self, counter: Counter, now: float) -> None:
        if counter.members is not None:
            self._members.setdefault(counter.members, set()).add(counter.key)
            self._spent_expiries.set(counter.members, now + counter.ttl_s)

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
        """Release expired holds; forget counters and pools of past periods."""
        now = self._clock()
        for hold_id in self._hold_expiries.due(now):
            self._release(hold_id)
        for key in self._spent_expiries.due(now):
            self._spent.pop(key, None)
            self._members.pop(key, None)
        return now


# Keys: the counter (settled nano-USD), the counter's index of holds (a set of hold ids), one key
# per hold (its amount; "settled" once settled), whose TTL releases an abandoned hold, and a share's
# pool (a set of its members' counter keys). ARGV: the amount, the hold's TTL (ms), the hold keys'
# prefix, the hold id, then per counter its limit, its TTL (s) and its pool's key ('' for none).
_LIMIT = """
local function limit(key, whole, members)
  whole = tonumber(whole)
  if members == '' then return whole end
  local count = redis.call('SCARD', members)
  if redis.call('SISMEMBER', members, key) == 0 then count = count + 1 end
  return math.floor(whole / count)
end
local function join(key, ttl, members)
  if members ~= '' then
    redis.call('SADD', members, key)
    redis.call('EXPIRE', members, ttl)
  end
end
"""

_HOLD = _LIMIT + """
local amount, prefix, id = tonumber(ARGV[1]), ARGV[3], ARGV[4]
local current = redis.call('GET', KEYS[1])
if current == 'settled' then return {0} end
local extra = amount - tonumber(current or '0')
if extra > 0 then
  local full = {0}
  for i = 2, #KEYS do
    local used, index = tonumber(redis.call('GET', KEYS[i]) or '0'), KEYS[i] .. ':holds'
    for _, other in ipairs(redis.call('SMEMBERS', index)) do
      local held = redis.call('GET', prefix .. other)
      if held and held ~= 'settled' then used = used + tonumber(held)
      else redis.call('SREM', index, other) end
    end
    local at = 5 + 3 * (i - 2)
    if used + extra > limit(KEYS[i], ARGV[at], ARGV[at + 2]) then full[#full + 1] = i - 1 end
  end
  if #full > 1 then return full end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
for i = 2, #KEYS do
  local at = 5 + 3 * (i - 2)
  redis.call('SADD', KEYS[i] .. ':holds', id)
  redis.call('EXPIRE', KEYS[i] .. ':holds', ARGV[at + 1])
  join(KEYS[i], ARGV[at + 1], ARGV[at + 2])
end
return {1}
"""

# ARGV: the spend, the hold id, the settled marker's TTL (ms), then per counter its TTL (s) and its
# pool's key ('' for none).
_SETTLE = _LIMIT + """
if redis.call('GET', KEYS[1]) == 'settled' then return 0 end
redis.call('SET', KEYS[1], 'settled', 'PX', ARGV[3])
for i = 2, #KEYS do
  redis.call('SREM', KEYS[i] .. ':holds', ARGV[2])
  if tonumber(ARGV[1]) ~= 0 then
    local at = 4 + 2 * (i - 2)
    redis.call('INCRBY', KEYS[i], ARGV[1])
    redis.call('EXPIRE', KEYS[i], ARGV[at])
    join(KEYS[i], ARGV[at], ARGV[at + 1])
  end
end
return 1
"""

# ARGV: the hold keys' prefix, then per counter its limit, its TTL (s) and its pool's key.
_USAGE = _LIMIT + """
local out = {}
for i = 1, #KEYS do
  local held, index, at = 0, KEYS[i] .. ':holds', 2 + 3 * (i - 1)
  for _, other in ipairs(redis.call('SMEMBERS', index)) do
    local amount = redis.call('GET', ARGV[1] .. other)
    if amount and amount ~= 'settled' then held = held + tonumber(amount) end
  end
  out[i] = {tonumber(redis.call('GET', KEYS[i]) or '0'), held, limit(KEYS[i], ARGV[at], ARGV[at + 2])}
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

    def _pool(self, counter: Counter) -> str:
        return "" if counter.members is None else self._prefix + counter.members

    async def take(self, hold: Hold, ttl_s: float) -> tuple[Counter, ...]:
        args: list[int | str] = [hold.amount, round(ttl_s * 1000), self.hold_key(""), hold.id]
        for c in hold.counters:
            args += [c.limit, c.ttl_s, self._pool(c)]
        keys = [self.hold_key(hold.id), *(self._prefix + c.key for c in hold.counters)]
        taken, *full = await self._state.run(lambda: self._hold(keys=keys, args=args))
        if taken:
            return ()
        return tuple(hold.counters[int(i) - 1] for i in full) if full else hold.counters

    async def settle(self, hold: Hold, spent: int, ttl_s: float) -> None:
        args: list[int | str] = [spent, hold.id, round(ttl_s * 1000)]
        for c in hold.counters:
            args += [c.ttl_s, self._pool(c)]
        keys = [self.hold_key(hold.id), *(self._prefix + c.key for c in hold.counters)]
        await self._state.run(lambda: self._settle(keys=keys, args=args))

    async def adopt(self, counter: Counter, spent: int) -> None:
        if spent:
            await self._state.run(lambda: self._state.client.set(
                self._prefix + counter.key, spent, nx=True, ex=counter.ttl_s))

    async def usage(self, counters: Sequence[Counter]) -> list[Usage]:
        keys = [self._prefix + c.key for c in counters]
        args: list[int | str] = [self.hold_key("")]
        for c in counters:
            args += [c.limit, c.ttl_s, self._pool(c)]
        found = await self._state.run(lambda: self._usage(keys=keys, args=args))
        return [Usage(int(spent), int(held), int(limit)) for spent, held, limit in found]
