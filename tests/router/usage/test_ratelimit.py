"""Rate limits: token buckets per user and per key, in memory (an injected clock) or on a real Redis
(the server's clock, so only what does not need time to pass is checked there)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from core.config import ApiKeyConfig, RateLimitConfig
from core.errors import RateLimited
from router.usage.ratelimit import ALWAYS, Bucket, Buckets, MemoryBuckets, RateLimiter, RedisBuckets
from router.usage.sharedstate import TIMEOUT_S, SharedState
from tests.conftest import RedisServer, free_port
from tests.fakes.clock import Clock

KEY = ApiKeyConfig(id="svc", sha256="0" * 64)
NO_LIMITS = {"user_requests_per_minute": None, "user_tokens_per_minute": None,
             "key_requests_per_minute": None, "key_tokens_per_minute": None}


def limits(**only: int) -> RateLimitConfig:
    """Every limit off except those given."""
    return RateLimitConfig(**{**NO_LIMITS, **only})


def admission(per_minute: int, key: str = "k") -> Bucket:
    return Bucket(key, per_minute, cost=1, need=1)


@pytest.fixture(params=["memory", "redis"])
def buckets(request: pytest.FixtureRequest) -> Buckets:
    """Each test's own buckets: a fresh memory store, or a fresh key prefix on the shared Redis."""
    if request.param == "memory":
        return MemoryBuckets(clock=Clock())
    return RedisBuckets(request.getfixturevalue("shared_state"), prefix=f"test:rl:{uuid.uuid4().hex}:")


def tolerance(buckets: Buckets) -> float:
    """Redis buckets refill on the server's clock while a test runs: allow for a little of it."""
    return 0.5 if isinstance(buckets, RedisBuckets) else 1e-9


async def test_a_burst_up_to_the_limit_passes_and_the_next_waits_one_refill(buckets: Buckets) -> None:
    bucket = admission(per_minute=6)
    for _ in range(6):
        assert await buckets.take([bucket]) == (0.0, -1)
    wait, worst = await buckets.take([bucket])
    assert wait == pytest.approx(10.0, abs=tolerance(buckets))  # one of 6 per minute: 10 s
    assert worst == 0
    again, _ = await buckets.take([bucket])  # the refusal took nothing: still one refill away
    assert again == pytest.approx(10.0, abs=tolerance(buckets))


async def test_a_check_over_several_buckets_is_all_or_nothing(buckets: Buckets) -> None:
    wide, narrow = admission(5, "wide"), admission(1, "narrow")
    assert await buckets.take([wide, narrow]) == (0.0, -1)
    wait, worst = await buckets.take([wide, narrow])
    assert wait > 0 and worst == 1  # the narrow bucket refuses
    for _ in range(4):  # so the wide one was not taken from: 4 of its 5 are left
        assert await buckets.take([wide]) == (0.0, -1)
    assert (await buckets.take([wide]))[0] > 0


async def test_the_bucket_that_waits_longest_is_named(buckets: Buckets) -> None:
    slow, fast = admission(1, "slow"), admission(60, "fast")
    assert await buckets.take([fast, slow]) == (0.0, -1)
    assert await buckets.take([fast]) == (0.0, -1)
    wait, worst = await buckets.take([fast, slow])
    assert worst == 1
    assert wait == pytest.approx(60.0, abs=tolerance(buckets))


async def test_a_debt_is_repaid_in_full_however_large(buckets: Buckets) -> None:
    admit = Bucket("tok", 100, cost=0, need=1)
    assert await buckets.take([Bucket("tok", 100, cost=350, need=ALWAYS)]) == (0.0, -1)
    wait, _ = await buckets.take([admit])
    # At -250, not forgiven down to one minute's worth: 251 tokens of refill, at 100 per minute.
    assert wait == pytest.approx(251 * 60 / 100, abs=tolerance(buckets))


async def test_a_refund_refills_a_bucket_up_to_its_size(buckets: Buckets) -> None:
    assert await buckets.take([Bucket("tok", 100, cost=80, need=80)]) == (0.0, -1)
    assert await buckets.take([Bucket("tok", 100, cost=-500, need=ALWAYS)]) == (0.0, -1)
    assert await buckets.take([Bucket("tok", 100, cost=100, need=100)]) == (0.0, -1)
    assert (await buckets.take([Bucket("tok", 100, cost=1, need=1)]))[0] > 0


async def test_a_charge_passes_whatever_the_level(buckets: Buckets) -> None:
    charge = Bucket("tok", 100, cost=1_000, need=ALWAYS)
    for _ in range(3):
        assert await buckets.take([charge]) == (0.0, -1)


async def test_buckets_refill_continuously_up_to_one_minutes_worth() -> None:
    clock = Clock()
    buckets = MemoryBuckets(clock=clock)
    bucket = admission(per_minute=6)
    for _ in range(6):
        await buckets.take([bucket])
    clock.advance(9.9)
    assert (await buckets.take([bucket]))[0] == pytest.approx(0.1)
    clock.advance(0.1)
    assert await buckets.take([bucket]) == (0.0, -1)
    assert (await buckets.take([bucket]))[0] == pytest.approx(10.0)
    clock.advance(3_600)  # an idle hour refills one minute's worth, no more
    for _ in range(6):
        assert await buckets.take([bucket]) == (0.0, -1)
    assert (await buckets.take([bucket]))[0] > 0


async def test_a_bucket_in_debt_refuses_until_refilled() -> None:
    clock = Clock()
    buckets = MemoryBuckets(clock=clock)
    admit = Bucket("tok", 60, cost=0, need=1)
    await buckets.take([Bucket("tok", 60, cost=90, need=ALWAYS)])  # level -30
    clock.advance(30)  # +30: level 0, still short of one token
    assert (await buckets.take([admit]))[0] == pytest.approx(1.0)
    clock.advance(1)
    assert await buckets.take([admit]) == (0.0, -1)


async def test_the_limiter_refuses_with_the_limit_named_and_a_retry_time(buckets: Buckets) -> None:
    limiter = RateLimiter(limits(user_requests_per_minute=3), buckets)
    for _ in range(3):
        await limiter.admit(KEY, "u1")
    with pytest.raises(RateLimited, match=r"user 'u1': 3 requests per minute") as refused:
        await limiter.admit(KEY, "u1")
    assert refused.value.retry_after == pytest.approx(20.0, abs=tolerance(buckets))
    assert refused.value.headers() == {"Retry-After": "20"}
    await limiter.admit(KEY, "u2")  # another user has a bucket of their own


async def test_the_limiter_lets_a_user_in_again_once_the_bucket_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(limits(user_requests_per_minute=3), MemoryBuckets(clock=clock))
    for _ in range(3):
        await limiter.admit(KEY, "u1")
    with pytest.raises(RateLimited):
        await limiter.admit(KEY, "u1")
    clock.advance(20)
    await limiter.admit(KEY, "u1")
    with pytest.raises(RateLimited):
        await limiter.admit(KEY, "u1")


async def test_a_keys_own_request_rate_overrides_the_default(buckets: Buckets) -> None:
    limiter = RateLimiter(limits(key_requests_per_minute=1_000), buckets)
    slow_key = ApiKeyConfig(id="batch", sha256="1" * 64, requests_per_minute=2)
    await limiter.admit(slow_key, "u1")
    await limiter.admit(slow_key, "u2")
    with pytest.raises(RateLimited, match=r"key 'batch': 2 requests per minute"):
        await limiter.admit(slow_key, "u3")
    await limiter.admit(KEY, "u3")  # other keys keep the default


async def test_a_request_reserves_its_estimated_tokens_and_settles_the_real_count(
        buckets: Buckets) -> None:
    limiter = RateLimiter(limits(user_tokens_per_minute=1_000), buckets)
    await limiter.reserve(KEY, "u1", 600)
    with pytest.raises(RateLimited, match=r"user 'u1': 1000 tokens per minute") as refused:
        await limiter.reserve(KEY, "u1", 600)  # 400 left: the estimate does not fit
    assert refused.value.retry_after == pytest.approx(200 * 60 / 1_000, abs=tolerance(buckets))
    await limiter.settle(KEY, "u1", reserved=600, used=100)  # 500 given back: 900 left
    await limiter.reserve(KEY, "u1", 600)
    await limiter.settle(KEY, "u1", reserved=600, used=2_300)  # used far more: 1,400 in debt
    with pytest.raises(RateLimited) as refused:
        await limiter.reserve(KEY, "u1", 1)
    assert refused.value.retry_after == pytest.approx(1_401 * 60 / 1_000, abs=tolerance(buckets))


async def test_concurrent_large_requests_cannot_overrun_a_token_limit(buckets: Buckets) -> None:
    limiter = RateLimiter(limits(user_tokens_per_minute=10_000), buckets)

    async def request() -> None:
        await limiter.admit(KEY, "u1")
        await limiter.reserve(KEY, "u1", 1_000)

    results = await asyncio.gather(*(request() for _ in range(120)), return_exceptions=True)
    assert results.count(None) == 10
    assert all(isinstance(r, RateLimited) for r in results if r is not None)


async def test_a_request_larger_than_a_minutes_tokens_waits_for_a_full_bucket(
        buckets: Buckets) -> None:
    limiter = RateLimiter(limits(user_tokens_per_minute=1_000), buckets)
    await limiter.reserve(KEY, "u1", 5_000)  # a full bucket lets it in, 4,000 in debt
    with pytest.raises(RateLimited) as refused:
        await limiter.reserve(KEY, "u1", 5_000)
    assert refused.value.retry_after == pytest.approx(5_000 * 60 / 1_000, abs=tolerance(buckets))


async def test_a_request_refused_for_tokens_gives_its_request_back(buckets: Buckets) -> None:
    limiter = RateLimiter(limits(user_requests_per_minute=2, user_tokens_per_minute=100), buckets)
    await limiter.admit(KEY, "u1")
    await limiter.reserve(KEY, "u1", 60)
    await limiter.admit(KEY, "u1")
    with pytest.raises(RateLimited, match="tokens"):
        await limiter.reserve(KEY, "u1", 60)
    await limiter.admit(KEY, "u1")  # the refused request took no request either
    with pytest.raises(RateLimited, match="requests"):
        await limiter.admit(KEY, "u1")


async def test_requests_without_a_user_are_limited_by_their_key_only(buckets: Buckets) -> None:
    limiter = RateLimiter(limits(user_requests_per_minute=2, user_tokens_per_minute=10,
                                 key_requests_per_minute=60), buckets)
    for _ in range(60):
        await limiter.admit(KEY, None)
        await limiter.reserve(KEY, None, 1_000)
    with pytest.raises(RateLimited, match="key 'svc'"):
        await limiter.admit(KEY, None)


async def test_a_refused_request_is_not_counted(buckets: Buckets) -> None:
    limiter = RateLimiter(limits(user_requests_per_minute=1, key_requests_per_minute=2), buckets)
    await limiter.admit(KEY, "u1")
    with pytest.raises(RateLimited, match="user 'u1'"):
        await limiter.admit(KEY, "u1")
    await limiter.admit(KEY, "u2")  # the key's second request: u1's refusal took none of the key's
    with pytest.raises(RateLimited, match="key 'svc'"):
        await limiter.admit(KEY, "u3")


async def test_without_limits_everything_is_let_in(buckets: Buckets) -> None:
    limiter = RateLimiter(limits(), buckets)
    for _ in range(50):
        await limiter.admit(KEY, "u1")
        await limiter.reserve(KEY, "u1", 10**9)
        await limiter.settle(KEY, "u1", 10**9, 10**10)


async def test_concurrent_requests_cannot_overrun_a_limit(buckets: Buckets) -> None:
    limiter = RateLimiter(limits(user_requests_per_minute=10), buckets)
    results = await asyncio.gather(*(limiter.admit(KEY, "u1") for _ in range(50)),
                                   return_exceptions=True)
    assert results.count(None) == 10
    assert all(isinstance(r, RateLimited) for r in results if r is not None)


async def test_the_limiter_fails_open_when_redis_is_unreachable() -> None:
    state = SharedState.connect(f"redis://127.0.0.1:{free_port()}/0")
    limiter = RateLimiter(limits(user_requests_per_minute=1, user_tokens_per_minute=1),
                          RedisBuckets(state))
    try:
        for _ in range(3):
            await limiter.admit(KEY, "u1")
            await limiter.reserve(KEY, "u1", 100)
            await limiter.settle(KEY, "u1", 100, 200)
    finally:
        await state.client.aclose()


async def test_a_hung_redis_costs_a_few_timeouts_then_nothing(own_redis: RedisServer) -> None:
    """SIGSTOP: connections stay open and nothing answers. The breaker opens after a few
    timeouts; later requests are let in at once instead of each waiting out the timeout."""
    state = SharedState.connect(own_redis.url)
    limiter = RateLimiter(limits(user_requests_per_minute=1_000), RedisBuckets(state))
    await limiter.admit(KEY, "u1")  # connected
    own_redis.pause()
    try:
        waits = []
        for _ in range(50):
            started = time.perf_counter()
            await limiter.admit(KEY, "u1")
            waits.append(time.perf_counter() - started)
        assert sum(waits) < 3 * TIMEOUT_S + 1.0, waits  # three timeouts, then the breaker
        assert max(waits[5:]) < 0.01
        assert state.breaker.state == "open"
    finally:
        own_redis.resume()
        await state.client.aclose()


async def test_memory_stays_flat_over_100_000_users() -> None:
    """A bucket that has refilled is the same as none: memory buckets forget it."""
    clock = Clock()
    buckets = MemoryBuckets(clock=clock)
    remembered = []
    for user in range(100_000):
        await buckets.take([Bucket(f"user:{user}:tok", 1_000, cost=1_500, need=1_000)])
        clock.advance(0.01)  # 100 new users a second, each 30 s in debt
        if user % 24_000 == 23_999:  # in step with the sweeps (one a minute: 6,000 users)
            remembered.append(len(buckets))
    assert all(n <= (90 + 60) * 100 for n in remembered), remembered  # 90 s to refill, 60 to sweep
    assert remembered[-1] <= remembered[0], remembered
