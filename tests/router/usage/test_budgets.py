"""Budgets: reserve the estimate before a provider call, settle to the real cost after; daily and
monthly limits per UTC period, never overrun by concurrent requests, in memory or on a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from calendar import timegm

import pytest
import redis.asyncio as aioredis

from core.config import BudgetConfig, BudgetsConfig
from router.usage.budgets import (
    DAY_TTL,
    MONTH_TTL,
    Budgets,
    BudgetStore,
    MemoryBudgetStore,
    RedisBudgetStore,
)


class Clock:
    def __init__(self, utc: str):
        self.now = utc_time(utc)

    def __call__(self) -> float:
        return self.now

    def set(self, utc: str) -> None:
        self.now = utc_time(utc)


def utc_time(text: str) -> float:
    """'2026-11-25 23:59:59' (UTC) as a Unix time."""
    day, clock = text.split()
    return float(timegm((*map(int, day.split("-")), *map(int, clock.split(":")), 0, 0, 0)))


def config(**users: BudgetConfig) -> BudgetsConfig:
    return BudgetsConfig(users=users)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> BudgetStore:
    """Each test's own counters: a fresh memory store, or a fresh key prefix on the shared Redis."""
    if request.param == "memory":
        return MemoryBudgetStore()
    return RedisBudgetStore(request.getfixturevalue("redis_client"),
                            prefix=f"test:budget:{uuid.uuid4().hex}:")


async def test_concurrent_reservations_cannot_overrun_a_budget(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=10)), store)
    holds = await asyncio.gather(*(budgets.reserve("u1", 1.0) for _ in range(100)))
    assert sum(h is not None for h in holds) == 10
    assert (await budgets.status("u1"))["daily_spent_usd"] == 10.0


async def test_settling_below_the_estimate_frees_the_difference(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=10)), store)
    holds = [await budgets.reserve("u1", 1.0) for _ in range(10)]
    assert await budgets.reserve("u1", 0.01) is None
    first = holds[0]
    assert first is not None
    await budgets.settle(first, 0.25)
    assert await budgets.reserve("u1", 0.75) is not None
    assert await budgets.reserve("u1", 0.01) is None


async def test_settling_above_the_estimate_counts_the_real_cost(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=10)), store)
    hold = await budgets.reserve("u1", 1.0)
    assert hold is not None
    await budgets.settle(hold, 3.0)
    assert (await budgets.status("u1"))["daily_spent_usd"] == 3.0
    assert await budgets.reserve("u1", 7.0) is not None
    assert await budgets.reserve("u1", 0.000001) is None


async def test_a_reservation_is_refused_whole_and_takes_nothing(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1, monthly_usd=5)), store)
    assert await budgets.reserve("u1", 2.0) is None  # over the daily limit, under the monthly one
    assert await budgets.status("u1") == {"daily_limit_usd": 1.0, "daily_spent_usd": 0.0,
                                          "monthly_limit_usd": 5.0, "monthly_spent_usd": 0.0}


async def test_daily_and_monthly_limits_both_apply(store: BudgetStore) -> None:
    clock = Clock("2026-11-10 12:00:00")
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=10, monthly_usd=15)), store, clock=clock)
    assert all([await budgets.reserve("u1", 1.0) for _ in range(10)])
    assert await budgets.reserve("u1", 1.0) is None  # the daily limit
    clock.set("2026-11-11 12:00:00")
    assert all([await budgets.reserve("u1", 1.0) for _ in range(5)])
    assert await budgets.reserve("u1", 1.0) is None  # the monthly limit, with the day at 5 of 10
    assert await budgets.status("u1") == {"daily_limit_usd": 10.0, "daily_spent_usd": 5.0,
                                          "monthly_limit_usd": 15.0, "monthly_spent_usd": 15.0}


async def test_a_new_utc_day_starts_a_fresh_daily_counter(store: BudgetStore) -> None:
    clock = Clock("2026-11-25 23:59:59")
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=2)), store, clock=clock)
    assert await budgets.reserve("u1", 2.0) is not None
    assert await budgets.reserve("u1", 0.5) is None
    clock.set("2026-11-26 00:00:00")
    assert (await budgets.status("u1"))["daily_spent_usd"] == 0.0
    assert await budgets.reserve("u1", 2.0) is not None


async def test_a_new_month_starts_a_fresh_monthly_counter(store: BudgetStore) -> None:
    clock = Clock("2026-11-30 23:00:00")
    budgets = Budgets(config(u1=BudgetConfig(monthly_usd=3)), store, clock=clock)
    assert await budgets.reserve("u1", 3.0) is not None
    clock.set("2026-12-01 00:00:00")
    assert await budgets.status("u1") == {"monthly_limit_usd": 3.0, "monthly_spent_usd": 0.0}
    assert await budgets.reserve("u1", 3.0) is not None


async def test_each_user_has_counters_of_their_own(store: BudgetStore) -> None:
    budgets = Budgets(BudgetsConfig(default=BudgetConfig(daily_usd=1)), store)
    assert await budgets.reserve("u1", 1.0) is not None
    assert await budgets.reserve("u1", 1.0) is None
    assert await budgets.reserve("u2", 1.0) is not None


async def test_status_reports_spent_and_limits_in_usd(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=2.5, monthly_usd=40)), store)
    hold = await budgets.reserve("u1", 0.123456789)
    assert hold is not None
    await budgets.settle(hold, 0.2)
    assert await budgets.status("u1") == {"daily_limit_usd": 2.5, "daily_spent_usd": 0.2,
                                          "monthly_limit_usd": 40.0, "monthly_spent_usd": 0.2}


async def test_status_names_each_period_whatever_the_user_id(store: BudgetStore) -> None:
    budgets = Budgets(config(**{"team:d:x": BudgetConfig(daily_usd=1, monthly_usd=9)}), store)
    assert await budgets.reserve("team:d:x", 0.5) is not None
    assert await budgets.status("team:d:x") == {"daily_limit_usd": 1.0, "daily_spent_usd": 0.5,
                                                "monthly_limit_usd": 9.0, "monthly_spent_usd": 0.5}


async def test_a_user_without_a_budget_is_not_limited(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1)), store)
    assert budgets.policy("someone-else") is None
    assert await budgets.status("someone-else") is None
    hold = await budgets.reserve("someone-else", 1_000.0)
    assert hold is not None and hold.counters == ()
    await budgets.settle(hold, 2_000.0)  # nothing to settle
    assert budgets.policy("u1") == BudgetConfig(daily_usd=1)


async def test_a_zero_budget_refuses_any_paid_request(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=0, on_exhausted="refuse")), store)
    assert budgets.policy("u1") is not None
    assert await budgets.reserve("u1", 0.000001) is None


async def test_redis_counters_expire_after_their_period(redis_client: aioredis.Redis) -> None:
    prefix = f"test:budget:{uuid.uuid4().hex}:"
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1, monthly_usd=9)),
                      RedisBudgetStore(redis_client, prefix=prefix), clock=Clock("2026-11-25 12:00:00"))
    hold = await budgets.reserve("u1", 0.5)
    assert hold is not None
    await redis_client.expire(f"{prefix}u1:d:2026-11-25", 10)
    await budgets.settle(hold, 0.6)  # a settle keeps the counters alive for their period
    assert DAY_TTL - 5 < await redis_client.ttl(f"{prefix}u1:d:2026-11-25") <= DAY_TTL
    assert MONTH_TTL - 5 < await redis_client.ttl(f"{prefix}u1:m:2026-11") <= MONTH_TTL
