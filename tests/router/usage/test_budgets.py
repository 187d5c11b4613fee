"""Budgets: hold the estimate before a provider call, settle to the real cost after; daily and
monthly limits per UTC period, never overrun by concurrent requests, holds that expire, in memory or
on a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from core.budget_config import BudgetConfig, BudgetsConfig
from core.errors import StorageUnavailable
from router.usage.budget_stores import BudgetStore, Hold, MemoryBudgetStore, RedisBudgetStore
from router.usage.budgets import Budgets, Refusal, SpendRow
from router.usage.scopes import GRACE_S, Scope
from router.usage.sharedstate import SharedState
from tests.conftest import free_port
from tests.fakes.clock import Clock, utc_time

U1 = Scope(None, "u1")  # user u1 of no tenant


def held(found: Hold | Refusal) -> bool:
    return isinstance(found, Hold)


def refused(found: Hold | Refusal) -> bool:
    return isinstance(found, Refusal)


def config(**users: BudgetConfig) -> BudgetsConfig:
    return BudgetsConfig(users=users)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> BudgetStore:
    """Each test's own counters: a fresh memory store, or a fresh key prefix on the shared Redis."""
    if request.param == "memory":
        return MemoryBudgetStore()
    return RedisBudgetStore(request.getfixturevalue("shared_state"),
                            prefix=f"test:budget:{uuid.uuid4().hex}:")


async def test_concurrent_reservations_cannot_overrun_a_budget(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=10)), store)
    holds = await asyncio.gather(*(budgets.reserve(U1, 1.0) for _ in range(100)))
    assert sum(held(h) for h in holds) == 10
    status = await budgets.status(U1)
    assert (status["daily_spent_usd"], status["daily_held_usd"]) == (0.0, 10.0)


async def test_settling_below_the_estimate_frees_the_difference(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=10)), store)
    holds = [await budgets.reserve(U1, 1.0) for _ in range(10)]
    assert refused(await budgets.reserve(U1, 0.01))
    first = holds[0]
    assert isinstance(first, Hold)
    await budgets.settle(first, 0.25)
    assert held(await budgets.reserve(U1, 0.75))
    assert refused(await budgets.reserve(U1, 0.01))


async def test_settling_above_the_estimate_counts_the_real_cost(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=10)), store)
    hold = await budgets.reserve(U1, 1.0)
    assert isinstance(hold, Hold)
    await budgets.settle(hold, 3.0)
    assert (await budgets.status(U1))["daily_spent_usd"] == 3.0
    assert held(await budgets.reserve(U1, 7.0))
    assert refused(await budgets.reserve(U1, 0.000001))


async def test_a_reservation_is_refused_whole_and_takes_nothing(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1, monthly_usd=5)), store)
    assert refused(await budgets.reserve(U1, 2.0))  # over the daily limit, under the monthly one
    assert await budgets.status(U1) == {
        "daily_limit_usd": 1.0, "daily_spent_usd": 0.0, "daily_held_usd": 0.0,
        "monthly_limit_usd": 5.0, "monthly_spent_usd": 0.0, "monthly_held_usd": 0.0}


async def test_daily_and_monthly_limits_both_apply(store: BudgetStore) -> None:
    clock = Clock.at_utc("2026-11-10 12:00:00")
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=10, monthly_usd=15)), store, clock=clock)
    assert all([held(await budgets.reserve(U1, 1.0)) for _ in range(10)])
    assert refused(await budgets.reserve(U1, 1.0))  # the daily limit
    clock.set_utc("2026-11-11 12:00:00")
    assert all([held(await budgets.reserve(U1, 1.0)) for _ in range(5)])
    assert refused(await budgets.reserve(U1, 1.0))  # the monthly limit, with the day at 5 of 10
    assert await budgets.status(U1) == {
        "daily_limit_usd": 10.0, "daily_spent_usd": 0.0, "daily_held_usd": 5.0,
        "monthly_limit_usd": 15.0, "monthly_spent_usd": 0.0, "monthly_held_usd": 15.0}


async def test_a_new_utc_day_starts_a_fresh_daily_counter(store: BudgetStore) -> None:
    clock = Clock.at_utc("2026-11-25 23:59:59")
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=2)), store, clock=clock)
    assert held(await budgets.reserve(U1, 2.0))
    assert refused(await budgets.reserve(U1, 0.5))
    clock.set_utc("2026-11-26 00:00:00")
    assert (await budgets.status(U1))["daily_held_usd"] == 0.0
    assert held(await budgets.reserve(U1, 2.0))


async def test_a_new_month_starts_a_fresh_monthly_counter(store: BudgetStore) -> None:
    clock = Clock.at_utc("2026-11-30 23:00:00")
    budgets = Budgets(config(u1=BudgetConfig(monthly_usd=3)), store, clock=clock)
    assert held(await budgets.reserve(U1, 3.0))
    clock.set_utc("2026-12-01 00:00:00")
    assert await budgets.status(U1) == {"monthly_limit_usd": 3.0, "monthly_spent_usd": 0.0,
                                          "monthly_held_usd": 0.0}
    assert held(await budgets.reserve(U1, 3.0))


async def test_each_user_has_counters_of_their_own(store: BudgetStore) -> None:
    budgets = Budgets(BudgetsConfig(default=BudgetConfig(daily_usd=1)), store)
    assert held(await budgets.reserve(U1, 1.0))
    assert refused(await budgets.reserve(U1, 1.0))
    assert held(await budgets.reserve(Scope(None, "u2"), 1.0))


async def test_status_reports_spent_and_limits_in_usd(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=2.5, monthly_usd=40)), store)
    hold = await budgets.reserve(U1, 0.123456789)
    assert isinstance(hold, Hold)
    await budgets.settle(hold, 0.2)
    assert await budgets.status(U1) == {
        "daily_limit_usd": 2.5, "daily_spent_usd": 0.2, "daily_held_usd": 0.0,
        "monthly_limit_usd": 40.0, "monthly_spent_usd": 0.2, "monthly_held_usd": 0.0}


async def test_status_names_each_period_whatever_the_user_id(store: BudgetStore) -> None:
    budgets = Budgets(config(**{"team:d:x": BudgetConfig(daily_usd=1, monthly_usd=9)}), store)
    hold = await budgets.reserve(Scope(None, "team:d:x"), 0.5)
    assert isinstance(hold, Hold)
    await budgets.settle(hold, 0.5)
    assert await budgets.status(Scope(None, "team:d:x")) == {
        "daily_limit_usd": 1.0, "daily_spent_usd": 0.5, "daily_held_usd": 0.0,
        "monthly_limit_usd": 9.0, "monthly_spent_usd": 0.5, "monthly_held_usd": 0.0}


async def test_a_user_without_a_budget_is_not_limited(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1)), store)
    assert budgets.policy(Scope(None, "someone-else")) is None
    assert await budgets.status(Scope(None, "someone-else")) is None
    hold = await budgets.reserve(Scope(None, "someone-else"), 1_000.0)
    assert isinstance(hold, Hold) and hold.counters == ()
    await budgets.settle(hold, 2_000.0)  # nothing to settle
    assert budgets.policy(U1) == BudgetConfig(daily_usd=1)


async def test_a_zero_budget_refuses_any_paid_request(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=0, on_exhausted="refuse")), store)
    assert budgets.policy(U1) is not None
    assert refused(await budgets.reserve(U1, 0.000001))


async def test_redis_counters_expire_a_day_after_their_period(
        shared_state: SharedState, redis_client: aioredis.Redis) -> None:
    prefix = f"test:budget:{uuid.uuid4().hex}:"
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1, monthly_usd=9)),
                      RedisBudgetStore(shared_state, prefix=prefix),
                      clock=Clock.at_utc("2026-11-25 12:00:00"))
    hold = await budgets.reserve(U1, 0.5)
    assert isinstance(hold, Hold)
    await budgets.settle(hold, 0.6)
    day_left = 12 * 3600 + GRACE_S  # noon: half the day, then a day
    assert day_left - 5 < await redis_client.ttl(f"{prefix}u1:d:2026-11-25") <= day_left
    month_left = (5 * 24 + 12) * 3600 + GRACE_S  # November 25th, noon: 5.5 days to December
    assert month_left - 5 < await redis_client.ttl(f"{prefix}u1:m:2026-11") <= month_left


async def test_a_top_up_holds_the_total_or_nothing(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=10)), store)
    hold = await budgets.reserve(U1, 4.0)
    assert isinstance(hold, Hold) and held(await budgets.reserve(U1, 3.0))
    assert refused(await budgets.top_up(hold, 7.5))  # 3.5 more does not fit beside the other 3
    bigger = await budgets.top_up(hold, 7.0)
    assert isinstance(bigger, Hold) and bigger.id == hold.id
    assert (await budgets.status(U1))["daily_held_usd"] == 10.0
    await budgets.settle(bigger, 6.0)
    assert await budgets.status(U1) == {"daily_limit_usd": 10.0, "daily_spent_usd": 6.0,
                                          "daily_held_usd": 3.0}


async def test_a_hold_across_midnight_stays_on_the_day_it_was_taken(store: BudgetStore) -> None:
    clock = Clock.at_utc("2026-11-30 23:59:59")
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=10, monthly_usd=100)), store, clock=clock)
    hold = await budgets.reserve(U1, 2.0)
    assert isinstance(hold, Hold)
    clock.set_utc("2026-12-01 00:00:01")  # a fallback after midnight, in a new month too
    topped = await budgets.top_up(hold, 9.0)
    assert isinstance(topped, Hold)
    await budgets.settle(topped, 8.0)
    assert await budgets.status(U1) == {
        "daily_limit_usd": 10.0, "daily_spent_usd": 0.0, "daily_held_usd": 0.0,
        "monthly_limit_usd": 100.0, "monthly_spent_usd": 0.0, "monthly_held_usd": 0.0}
    clock.set_utc("2026-11-30 23:00:00")
    assert await budgets.status(U1) == {
        "daily_limit_usd": 10.0, "daily_spent_usd": 8.0, "daily_held_usd": 0.0,
        "monthly_limit_usd": 100.0, "monthly_spent_usd": 8.0, "monthly_held_usd": 0.0}


async def test_a_hold_taken_after_midnight_for_a_request_of_yesterday_counts_yesterday(
        store: BudgetStore) -> None:
    clock = Clock.at_utc("2026-11-26 00:00:02")
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1)), store, clock=clock)
    admitted = utc_time("2026-11-25 23:59:59")
    hold = await budgets.reserve(U1, 1.0, at=admitted)
    assert isinstance(hold, Hold)
    assert held(await budgets.reserve(U1, 1.0))  # today's budget is untouched
    assert refused(await budgets.reserve(U1, 0.5, at=admitted))


async def test_an_abandoned_hold_is_released_when_it_expires() -> None:
    ticks = Clock(0.0)
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1)), MemoryBudgetStore(clock=ticks),
                      hold_ttl_s=60)
    assert held(await budgets.reserve(U1, 1.0))  # its replica dies: never settled
    assert refused(await budgets.reserve(U1, 0.5))
    ticks.now = 59
    assert refused(await budgets.reserve(U1, 0.5))
    ticks.now = 60
    assert held(await budgets.reserve(U1, 0.5))


async def test_a_top_up_keeps_a_hold_alive(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1)), store, hold_ttl_s=0.3)
    hold = await budgets.reserve(U1, 0.5)
    assert isinstance(hold, Hold)
    await asyncio.sleep(0.2)
    assert held(await budgets.top_up(hold, 0.6))
    await asyncio.sleep(0.2)
    assert (await budgets.status(U1))["daily_held_usd"] == 0.6
    await asyncio.sleep(0.2)
    assert (await budgets.status(U1))["daily_held_usd"] == 0.0


async def test_a_redis_hold_expires_on_its_own(shared_state: SharedState) -> None:
    store = RedisBudgetStore(shared_state, prefix=f"test:budget:{uuid.uuid4().hex}:")
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1)), store, hold_ttl_s=0.2)
    assert held(await budgets.reserve(U1, 1.0))
    assert refused(await budgets.reserve(U1, 0.1))
    await asyncio.sleep(0.3)
    assert held(await budgets.reserve(U1, 1.0))


async def test_a_hold_settled_after_it_expired_still_counts_its_spend(shared_state: SharedState) -> None:
    store = RedisBudgetStore(shared_state, prefix=f"test:budget:{uuid.uuid4().hex}:")
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1)), store, hold_ttl_s=0.1)
    hold = await budgets.reserve(U1, 0.5)
    assert isinstance(hold, Hold)
    await asyncio.sleep(0.2)
    await budgets.settle(hold, 0.4)
    await budgets.settle(hold, 0.4)  # a retried settlement counts once
    assert await budgets.status(U1) == {"daily_limit_usd": 1.0, "daily_spent_usd": 0.4,
                                          "daily_held_usd": 0.0}


async def test_an_unreachable_budget_store_is_a_503_that_says_so() -> None:
    state = SharedState.connect(f"redis://127.0.0.1:{free_port()}/0")
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1)), RedisBudgetStore(state))
    try:
        for call in (budgets.reserve(U1, 0.1), budgets.status(U1)):
            with pytest.raises(StorageUnavailable) as failed:
                await call
            assert failed.value.code == "budget_store_unavailable"
            assert "budget" in failed.value.message
            assert int(failed.value.headers()["Retry-After"]) >= 1
        assert held(await budgets.reserve(Scope(None, "someone-without-a-budget"), 5.0))  # never asked
    finally:
        await state.client.aclose()


async def test_requests_without_a_user_id_have_only_a_budget_named_anonymous(
        store: BudgetStore) -> None:
    everyone = Budgets(BudgetsConfig(default=BudgetConfig(daily_usd=1)), store)
    assert everyone.policy(Scope(None, "ada")) is not None
    assert everyone.policy(Scope(None, None)) is None
    assert everyone.policy(Scope(None, "anonymous")) == BudgetConfig(daily_usd=1)  # a user like any other
    named = Budgets(BudgetsConfig(default=BudgetConfig(daily_usd=1),
                                  users={"anonymous": BudgetConfig(daily_usd=50)}), store)
    assert named.policy(Scope(None, None)) == BudgetConfig(daily_usd=50)


async def test_a_user_named_anonymous_and_unnamed_requests_have_separate_counters(
        store: BudgetStore) -> None:
    budgets = Budgets(config(anonymous=BudgetConfig(daily_usd=1)), store)
    assert held(await budgets.reserve(Scope(None, None), 0.9))
    assert held(await budgets.reserve(Scope(None, "anonymous"), 0.9))
    assert refused(await budgets.reserve(Scope(None, "anonymous"), 0.2))


async def test_a_users_counters_belong_to_a_tenant(store: BudgetStore) -> None:
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1)), store)
    assert held(await budgets.reserve(Scope("backend", "u1"), 0.9))
    assert held(await budgets.reserve(Scope("mobile-app", "u1"), 0.9))
    assert refused(await budgets.reserve(Scope("backend", "u1"), 0.2))


async def test_a_memory_store_starts_from_the_ledgers_spend_of_the_current_periods() -> None:
    asked: list[str] = []

    async def ledger(since: str) -> list[SpendRow]:
        asked.append(since)
        return [(None, None, "u1", "2026-11-25", 0.75), (None, None, "u1", "2026-11-03", 3.0),
                (None, None, "u2", "2026-11-25", 9.0), (None, None, "no-budget", "2026-11-25", 100.0),
                ("other-tenant", None, "u1", "2026-11-25", 50.0)]

    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1, monthly_usd=5),
                             u2=BudgetConfig(monthly_usd=10)),
                      MemoryBudgetStore(), clock=Clock.at_utc("2026-11-25 12:00:00"), seed=ledger)
    assert await budgets.status(U1) == {
        "daily_limit_usd": 1.0, "daily_spent_usd": 0.75, "daily_held_usd": 0.0,
        "monthly_limit_usd": 5.0, "monthly_spent_usd": 3.75, "monthly_held_usd": 0.0}
    assert refused(await budgets.reserve(Scope(None, "u2"), 1.5))
    assert held(await budgets.reserve(Scope(None, "u2"), 1.0))
    assert asked == ["2026-11-01"]  # once, from the first day of the month


async def test_budgets_wait_for_the_ledger_to_answer_before_their_first_use() -> None:
    answers: list[list[SpendRow]] = []
    asked = []

    async def ledger(since: str) -> list[SpendRow]:
        asked.append(since)
        if not answers:
            raise StorageUnavailable("the usage ledger's database is unavailable")
        return answers.pop()

    clock = Clock.at_utc("2026-11-25 12:00:00")
    budgets = Budgets(config(u1=BudgetConfig(daily_usd=1)), MemoryBudgetStore(), clock=clock,
                      seed=ledger)
    for _ in range(2):  # the second without asking the ledger again so soon
        with pytest.raises(StorageUnavailable) as failed:
            await budgets.reserve(U1, 0.1)
        assert failed.value.code == "budget_store_unavailable"
    assert len(asked) == 1
    answers.append([(None, None, "u1", "2026-11-25", 0.95)])
    clock.set_utc("2026-11-25 12:00:05")
    assert refused(await budgets.reserve(U1, 0.1))
    assert held(await budgets.reserve(U1, 0.05))
    assert len(asked) == 2


async def test_memory_stays_flat_over_100_000_users() -> None:
    """Counters are forgotten a day after their period ends, holds once settled or expired: what
    the store remembers stays flat however many users come and go."""
    clock, ticks = Clock.at_utc("2026-01-01 00:00:00"), Clock(0.0)
    store = MemoryBudgetStore(clock=ticks)
    budgets = Budgets(BudgetsConfig(default=BudgetConfig(daily_usd=1, monthly_usd=10)), store,
                      clock=clock, hold_ttl_s=900)
    remembered = []
    for user in range(100_000):
        hold = await budgets.reserve(Scope(None, f"user-{user}"), 0.01)
        assert isinstance(hold, Hold)
        if user % 10:  # one in ten is abandoned (its replica died) and expires
            await budgets.settle(hold, 0.005)
        clock.now += 180  # 480 new users a day: 100,000 users over 208 days
        ticks.now += 180
        if user % 20_000 == 19_999:
            remembered.append(store.entries())
    # A counter and its expiry per user of this month (31 days at most) and of the day before:
    # the same bound at 20,000 users as at 100,000 (without eviction: 200,000 counters and more).
    assert all(n < 2 * (31 + 3) * 480 for n in remembered), remembered


async def test_a_weekly_budget_counts_the_iso_week(store: BudgetStore) -> None:
    clock = Clock.at_utc("2026-12-06 23:00:00")  # a Sunday
    budgets = Budgets(config(u1=BudgetConfig(weekly_usd=2)), store, clock=clock)
    assert held(await budgets.reserve(U1, 2.0))
    clock.set_utc("2026-12-02 12:00:00")  # the Wednesday before: the same week
    assert refused(await budgets.reserve(U1, 0.5))
    clock.set_utc("2026-12-07 00:00:00")  # Monday: a new week
    assert await budgets.status(U1) == {
        "weekly_limit_usd": 2.0, "weekly_spent_usd": 0.0, "weekly_held_usd": 0.0}
    assert held(await budgets.reserve(U1, 2.0))


async def test_a_weekly_counter_is_seeded_with_the_weeks_spend_not_the_months() -> None:
    """The week of Wednesday 2 December began on Monday 30 November: the ledger is read from there,
    and each counter takes the days its own period holds."""
    asked: list[str] = []

    async def ledger(since: str) -> list[SpendRow]:
        asked.append(since)
        return [(None, None, "u1", "2026-11-30", 1.0), (None, None, "u1", "2026-12-01", 0.5),
                (None, None, "u1", "2026-12-02", 0.25)]

    budgets = Budgets(config(u1=BudgetConfig(daily_usd=5, weekly_usd=10, monthly_usd=100)),
                      MemoryBudgetStore(), clock=Clock.at_utc("2026-12-02 12:00:00"), seed=ledger)
    assert await budgets.status(U1) == {
        "daily_limit_usd": 5.0, "daily_spent_usd": 0.25, "daily_held_usd": 0.0,
        "weekly_limit_usd": 10.0, "weekly_spent_usd": 1.75, "weekly_held_usd": 0.0,
        "monthly_limit_usd": 100.0, "monthly_spent_usd": 0.75, "monthly_held_usd": 0.0}
    assert asked == ["2026-11-30"]
