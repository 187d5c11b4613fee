"""Token-per-minute limits against a model, memory and Redis, under random interleavings of
requests that reserve their estimate, settlements to the real count (never above the estimate),
settlements lost to a store outage, abandoned requests, and clock advances:
- what the buckets have let through (reservations still open, settled counts, estimates whose
  settlement was lost) never exceeds a minute's worth plus what has refilled since;
- a refused request is let in once its bucket has refilled for the time it was told to wait."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import ApiKeyConfig, RateLimitConfig
from core.errors import RateLimited
from router.usage.ratelimit import Bucket, Buckets, MemoryBuckets, RateLimiter, RedisBuckets
from router.usage.sharedstate import SharedState, StateUnavailable
from tests.conftest import RedisServer
from tests.fakes.clock import Clock

PER_MINUTE = 1_000
KEY = ApiKeyConfig(id="svc", sha256="0" * 64, tokens_per_minute=PER_MINUTE)
LIMITS = RateLimitConfig(user_requests_per_minute=None, user_tokens_per_minute=None,
                         key_requests_per_minute=None)

Step = tuple[str, int, int]
request = st.tuples(st.just("request"), st.integers(1, 700), st.integers(0, 4))  # estimate, real/4
steps = st.lists(st.one_of(
    request, request,
    st.tuples(st.just("settle"), st.integers(0, 9), st.just(0)),
    st.tuples(st.just("settle_lost"), st.integers(0, 9), st.just(0)),  # the store was down
    st.tuples(st.just("abandon"), st.integers(0, 9), st.just(0)),  # its replica died
    st.tuples(st.just("advance"), st.integers(1, 90), st.just(0)),  # seconds
), min_size=5, max_size=40)


class Flaky:
    def __init__(self, buckets: Buckets):
        self.buckets = buckets
        self.down = False

    async def take(self, buckets: list[Bucket]) -> tuple[float, int]:
        if self.down:
            self.down = False
            raise StateUnavailable("down", 1.0)
        return await self.buckets.take(buckets)


@dataclass
class Ledger:
    open: list[tuple[int, int]] = field(default_factory=list)  # (estimate, real) in flight
    through: int = 0  # tokens the buckets counted for requests already finished

    def counted(self) -> int:
        return self.through + sum(estimate for estimate, _ in self.open)


async def play(script: list[Step], buckets: Buckets, elapsed: Callable[[], float],
               advance: Callable[[float], None] | None) -> None:
    """`advance` moves the buckets' clock; without one (Redis), a refused request stays out."""
    flaky = Flaky(buckets)
    limiter = RateLimiter(LIMITS, flaky)
    ledger = Ledger()
    for action, a, b in script:
        chosen = ledger.open[a % len(ledger.open)] if ledger.open else None
        if action == "request":
            try:
                await limiter.reserve(KEY, None, a)
                ledger.open.append((a, a * b // 4))
            except RateLimited as refused:
                if advance is not None:
                    advance(refused.retry_after + 0.01)
                    await limiter.reserve(KEY, None, a)  # refilled as promised: let in
                    ledger.open.append((a, a * b // 4))
        elif action in ("settle", "settle_lost") and chosen:
            estimate, real = chosen
            flaky.down = action == "settle_lost"
            await limiter.settle(KEY, None, estimate, real)  # fails open when lost
            flaky.down = False  # (a settlement of exactly the estimate asks the store nothing)
            ledger.open.remove(chosen)
            ledger.through += real if action == "settle" else estimate
        elif action == "abandon" and chosen:
            ledger.open.remove(chosen)
            ledger.through += chosen[0]  # its reservation stays counted: it refills like use
        elif action == "advance" and advance is not None:
            advance(a)
        allowed = PER_MINUTE + elapsed() * PER_MINUTE / 60
        assert ledger.counted() <= allowed + 1e-6, (ledger, elapsed())


@settings(max_examples=150, deadline=None)
@given(steps)
def test_memory_token_buckets_hold_their_limit(script: list[Step]) -> None:
    clock = Clock()

    def advance(seconds: float) -> None:
        clock.now += seconds

    asyncio.run(play(script, MemoryBuckets(clock=clock), lambda: clock.now - clock.start, advance))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_redis_token_buckets_hold_their_limit(own_redis: RedisServer, script: list[Step]) -> None:
    """Redis refills on its own clock: the time that really passes."""

    async def scenario() -> None:
        state = SharedState.connect(own_redis.url)
        started = time.monotonic()
        try:
            await play(script, RedisBuckets(state, prefix=f"test:rl-model:{uuid.uuid4().hex}:"),
                       lambda: time.monotonic() - started + 0.05, None)
        finally:
            await state.client.aclose()

    asyncio.run(scenario())
