"""Rate limits per API key and per identified user: requests per minute and tokens per minute.

Each limit is a token bucket holding up to a minute's allowance and refilled continuously. A request
takes one from each request bucket on arrival. Once its size is known (the prompt and `max_tokens`)
it reserves that estimate from each token bucket, and is let in only if every bucket holds it (or,
for a request larger than a minute's allowance, is full); its real token count settles the
reservation after (a refund, or a debt the bucket refills before anything else gets in). So
concurrent requests cannot take more than the limit between them. All buckets of a check are tested
and taken together: a refused request takes nothing. Requests without a user id are limited by
their key's buckets only (per-user limits would throttle a whole backend that sends none).

With Redis, one Lua script does this atomically on the server's clock for every router replica,
behind the shared-state breaker: when Redis does not answer, requests are let in (fail open).
Without Redis each replica keeps its own buckets, and forgets a bucket once it has refilled."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from core import metrics
from core.config import ApiKeyConfig, RateLimitConfig
from core.errors import RateLimited
from router.usage.sharedstate import SharedState, StateUnavailable

log = logging.getLogger("ray.serve")
ALWAYS = -1e18  # `need` of a charge or a refund: passes whatever the level
SWEEP_S = 60.0  # how often memory buckets forget those that have refilled
Kind = Literal["req", "tok"]


@dataclass(frozen=True)
class Bucket:
    key: str
    per_minute: int
    cost: float  # taken when every bucket passes (negative: given back)
    need: float  # the level a bucket must hold to pass


class Buckets(Protocol):
    async def take(self, buckets: list[Bucket]) -> tuple[float, int]:
        """Take every cost and return (0, -1) when all pass; else take nothing and return the
        seconds until all would pass and the index of the bucket that waits longest."""
        ...


def refill(level: float, elapsed: float, per_minute: int) -> float:
    return min(float(per_minute), level + elapsed * per_minute / 60)


class MemoryBuckets:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._state: dict[str, tuple[float, float, int]] = {}  # key -> (level, when, per minute)
        self._next_sweep = clock() + SWEEP_S

    def __len__(self) -> int:
        return len(self._state)

    async def take(self, buckets: list[Bucket]) -> tuple[float, int]:
        now = self._clock()
        self._sweep(now)
        levels = [self._level(b, now) for b in buckets]
        waits = [_wait(b, level) for b, level in zip(buckets, levels, strict=True)]
        if max(waits) > 0:
            return max(waits), waits.index(max(waits))
        for bucket, level in zip(buckets, levels, strict=True):
            self._state[bucket.key] = (min(bucket.per_minute, level - bucket.cost), now,
                                       bucket.per_minute)
        return 0.0, -1

    def _level(self, bucket: Bucket, now: float) -> float:
        level, when, _ = self._state.get(bucket.key, (float(bucket.per_minute), now, 0))
        return refill(level, now - when, bucket.per_minute)

    def _sweep(self, now: float) -> None:
        """A full bucket is the same as none: forget those (idle users, expired debts)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_S
        full = [key for key, (level, when, per_minute) in self._state.items()
                if refill(level, now - when, per_minute) >= per_minute]
        for key in full:
            del self._state[key]


def _wait(bucket: Bucket, level: float) -> float:
    return (bucket.need - level) * 60 / bucket.per_minute if level < bucket.need else 0.0


_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local levels, wait, worst = {}, 0, 0
for i = 1, #KEYS do
  local cap, need = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i])
  local s = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = cap
  if s[1] then level = math.min(cap, tonumber(s[1]) + (now - tonumber(s[2])) * cap / 60) end
  levels[i] = level
  if level < need and (need - level) * 60 / cap > wait then
    wait, worst = (need - level) * 60 / cap, i - 1
  end
end
if wait > 0 then return {tostring(wait), worst} end
for i = 1, #KEYS do
  local cap, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1])
  local level = math.min(cap, levels[i] - cost)
  redis.call('HSET', KEYS[i], 'l', tostring(level), 't', tostring(now))
  -- kept until it has refilled (a full bucket is the same as none)
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) * 60000 / cap) + 1000)
end
return {'0', -1}
"""


class RedisBuckets:
    def __init__(self, state: SharedState, prefix: str = "learnx:rl:"):
        self._state = state
        self._script = state.client.register_script(_TAKE)
        self._prefix = prefix

    async def take(self, buckets: list[Bucket]) -> tuple[float, int]:
        args: list[float] = []
        for b in buckets:
            args += [b.per_minute, b.cost, b.need]
        keys = [self._prefix + b.key for b in buckets]
        wait, worst = await self._state.run(lambda: self._script(keys=keys, args=args))
        return float(wait), int(worst)


class RateLimiter:
    def __init__(self, config: RateLimitConfig, buckets: Buckets):
        self._config = config
        self._buckets = buckets

    async def admit(self, key: ApiKeyConfig, user: str | None) -> None:
        """Count a request in, or raise RateLimited with the seconds to wait. `user` is None for
        requests without a user id."""
        await self._check([Bucket(name, limit, 1, 1) for name, limit in self._limits(key, user, "req")])

    async def reserve(self, key: ApiKeyConfig, user: str | None, tokens: int) -> None:
        """Reserve a request's estimated tokens, or raise RateLimited (and give back the request
        counted by `admit`: a refused request takes nothing)."""
        if tokens <= 0:
            return
        try:
            await self._check([Bucket(name, limit, tokens, min(tokens, limit))
                               for name, limit in self._limits(key, user, "tok")])
        except RateLimited:
            await self._take([Bucket(name, limit, -1, ALWAYS)
                              for name, limit in self._limits(key, user, "req")])
            raise

    async def settle(self, key: ApiKeyConfig, user: str | None, reserved: int, used: int) -> None:
        """Replace a reservation with the tokens the request really used."""
        if used != reserved:
            await self._take([Bucket(name, limit, used - reserved, ALWAYS)
                              for name, limit in self._limits(key, user, "tok")])

    def _limits(self, key: ApiKeyConfig, user: str | None, kind: Kind) -> list[tuple[str, int]]:
        c = self._config
        pairs = [(f"key:{key.id}:{kind}", (key.requests_per_minute or c.key_requests_per_minute)
                  if kind == "req" else (key.tokens_per_minute or c.key_tokens_per_minute))]
        if user is not None:  # the user of the key's tenant
            pairs.append((f"user:{key.tenant_id}\x1f{user}:{kind}",
                          c.user_requests_per_minute if kind == "req" else c.user_tokens_per_minute))
        return [(name, limit) for name, limit in pairs if limit is not None]

    async def _check(self, buckets: list[Bucket]) -> None:
        wait, worst = await self._take(buckets)
        if wait > 0:
            name = buckets[worst].key  # scope:name:kind, e.g. user:u1:req
            metrics.record_rate_limited(name.split(":", 1)[0],
                                        "requests" if name.endswith(":req") else "tokens")
            raise RateLimited(f"rate limit reached: {_describe(buckets[worst])}; retry in "
                              f"{wait:.1f}s", retry_after=wait)

    async def _take(self, buckets: list[Bucket]) -> tuple[float, int]:
        if not buckets:
            return 0.0, -1
        try:
            return await self._buckets.take(buckets)
        except StateUnavailable:  # fail open: a limit must not take the service down
            return 0.0, -1


def _describe(bucket: Bucket) -> str:
    """`user 'u1': 60 requests per minute` from the bucket key `user:<tenant>\x1fu1:req`."""
    scope, _, rest = bucket.key.partition(":")
    name, _, kind = rest.rpartition(":")
    unit = "requests" if kind == "req" else "tokens"
    return f"{scope} {name.rpartition(chr(0x1f))[2]!r}: {bucket.per_minute} {unit} per minute"
