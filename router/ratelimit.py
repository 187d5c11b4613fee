"""Rate limits per user and per API key: requests per minute and tokens per minute.

Each limit is a token bucket holding up to a minute's allowance and refilled continuously. A request
takes one from each request bucket on arrival, and is let in only while its token buckets are not
empty; its real token count (known only at the end) is charged afterwards, so a large request may
leave a bucket in debt (at most one minute's worth). All buckets of a check are tested and taken
together: a refused request takes nothing. With Redis, one Lua script does this atomically on the
server's clock for every router replica; without it, each replica keeps its own buckets."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from core import metrics
from core.config import ApiKeyConfig, RateLimitConfig
from core.errors import RateLimited

log = logging.getLogger("ray.serve")
ALWAYS = -1e18  # `need` of a charge: passes whatever the level


@dataclass(frozen=True)
class Bucket:
    key: str
    per_minute: int
    cost: float  # taken when every bucket passes
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
        self._state: dict[str, tuple[float, float]] = {}  # key -> (level, when)

    async def take(self, buckets: list[Bucket]) -> tuple[float, int]:
        now = self._clock()
        levels = [self._level(b, now) for b in buckets]
        waits = [_wait(b, level) for b, level in zip(buckets, levels, strict=True)]
        if max(waits) > 0:
            return max(waits), waits.index(max(waits))
        for bucket, level in zip(buckets, levels, strict=True):
            self._state[bucket.key] = (max(-bucket.per_minute, level - bucket.cost), now)
        return 0.0, -1

    def _level(self, bucket: Bucket, now: float) -> float:
        level, when = self._state.get(bucket.key, (float(bucket.per_minute), now))
        return refill(level, now - when, bucket.per_minute)


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
  redis.call('HSET', KEYS[i], 'l', tostring(math.max(-cap, levels[i] - cost)), 't', tostring(now))
  redis.call('EXPIRE', KEYS[i], 180)
end
return {'0', -1}
"""


class RedisBuckets:
    def __init__(self, client: aioredis.Redis, prefix: str = "learnx:rl:"):
        self._script = client.register_script(_TAKE)
        self._prefix = prefix

    async def take(self, buckets: list[Bucket]) -> tuple[float, int]:
        args: list[float] = []
        for b in buckets:
            args += [b.per_minute, b.cost, b.need]
        wait, worst = await self._script(keys=[self._prefix + b.key for b in buckets], args=args)
        return float(wait), int(worst)


class RateLimiter:
    def __init__(self, config: RateLimitConfig, buckets: Buckets):
        self._config = config
        self._buckets = buckets

    async def admit(self, key: ApiKeyConfig, user: str) -> None:
        """Let a request in or raise RateLimited with the seconds to wait."""
        checks = [Bucket(name, limit, 1, 1) for name, limit in self._limits(key, user, "req")]
        checks += [Bucket(name, limit, 0, 1) for name, limit in self._limits(key, user, "tok")]
        wait, worst = await self._take(checks)
        if wait > 0:
            key_name = checks[worst].key  # scope:name:kind, e.g. user:u1:req
            metrics.record_rate_limited(key_name.split(":", 1)[0],
                                        "requests" if key_name.endswith(":req") else "tokens")
            raise RateLimited(f"rate limit reached: {_describe(checks[worst])}; retry in "
                              f"{wait:.1f}s", retry_after=wait)

    async def charge(self, key: ApiKeyConfig, user: str, tokens: int) -> None:
        """Count a finished request's tokens."""
        if tokens > 0:
            await self._take([Bucket(name, limit, tokens, ALWAYS)
                              for name, limit in self._limits(key, user, "tok")])

    def _limits(self, key: ApiKeyConfig, user: str, kind: str) -> list[tuple[str, int]]:
        c = self._config
        pairs = [(f"key:{key.id}:{kind}", (key.requests_per_minute or c.key_requests_per_minute)
                  if kind == "req" else (key.tokens_per_minute or c.key_tokens_per_minute)),
                 (f"user:{user}:{kind}", c.user_requests_per_minute if kind == "req"
                  else c.user_tokens_per_minute)]
        return [(name, limit) for name, limit in pairs if limit is not None]

    async def _take(self, buckets: list[Bucket]) -> tuple[float, int]:
        if not buckets:
            return 0.0, -1
        try:
            return await self._buckets.take(buckets)
        except (aioredis.RedisError, OSError) as error:  # fail open: limits must not take us down
            log.warning("rate limit store unavailable (%s); request let in", type(error).__name__)
            return 0.0, -1


def _describe(bucket: Bucket) -> str:
    """`user 'u1': 60 requests per minute` from the bucket key `user:u1:req`."""
    scope, _, rest = bucket.key.partition(":")
    name, _, kind = rest.rpartition(":")
    unit = "requests" if kind == "req" else "tokens"
    return f"{scope} {name!r}: {bucket.per_minute} {unit} per minute"
