"""Budget levels: a tenant's (a school), a group's (a class) and a user's (a learner) budget, each
with its period and action. A learner's spend counts against every level above; their share of
the group's pool is capped (learner_cap_usd) or an equal part among its active learners; a term has
dates of its own. On the memory store and a real Redis; levels set through the API are kept in
the ledger's database and seen by every replica."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.budget_config import BudgetConfig, BudgetsConfig, Level, LevelBudget
from core.config import LedgerConfig
from router.usage.budget_stores import BudgetStore, Hold, MemoryBudgetStore, RedisBudgetStore
from router.usage.budgets import Budgets, Refusal, SpendRow
from router.usage.ledger import Ledger
from router.usage.levels import Levels
from router.usage.scopes import Scope
from router.usage.stores import open_store
from tests.fakes.clock import Clock
from tests.router.usage.conftest import Database

ADA = Scope("school", "ada", "class-7a")
BEA = Scope("school", "bea", "class-7a")


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> BudgetStore:
    if request.param == "memory":
        return MemoryBudgetStore()
    return RedisBudgetStore(request.getfixturevalue("shared_state"),
                            prefix=f"test:levels:{uuid.uuid4().hex}:")


def budgets(store: BudgetStore, *levels: dict[str, Any], clock: Clock | None = None,
            **config: Any) -> Budgets:
    return Budgets(BudgetsConfig(levels=[Level.model_validate(lv) for lv in levels], **config),
                   store, clock=clock or Clock.at_utc("2026-11-25 12:00:00"))


def levels_named(found: Hold | Refusal) -> list[tuple[str, str]]:
    assert isinstance(found, Refusal), found
    return [(c.level, c.window.period) for c in found.counters]


async def test_a_learners_spend_counts_against_every_level_above(store: BudgetStore) -> None:
    found = budgets(store, {"tenant": "school", "usd": 10},
                    {"tenant": "school", "group": "class-7a", "usd": 5, "period": "week"},
                    {"tenant": "school", "user": "ada", "usd": 2, "period": "day"})
    hold = await found.reserve(ADA, 1.0)
    assert isinstance(hold, Hold)
    await found.settle(hold, 0.75)
    levels = {s["level"]: s for s in await found.by_level(ADA)}
    assert {level: s["spent_usd"] for level, s in levels.items()} == {
        "tenant": 0.75, "group": 0.75, "learner_share": 0.75, "user": 0.75}
    assert (levels["group"]["period"], levels["group"]["start"], levels["group"]["end"]) == (
        "week", "2026-11-23", "2026-11-29")
    assert levels["user"]["remaining_usd"] == 1.25
    assert levels["tenant"]["group"] is None and levels["learner_share"]["user"] == "ada"


async def test_a_level_without_room_refuses_and_is_named(store: BudgetStore) -> None:
    found = budgets(store, {"tenant": "school", "usd": 1, "on_exhausted": "refuse"},
                    {"tenant": "school", "group": "class-7a", "usd": 5})
    assert isinstance(await found.reserve(BEA, 0.9), Hold)
    refused = await found.reserve(ADA, 0.2)
    assert levels_named(refused) == [("tenant", "month")]
    assert isinstance(refused, Refusal) and refused.action == "refuse"
    error = refused.error("no")
    assert error.body()["error"] | {"message": None} == {
        "type": "budget_exceeded", "code": "budget_exceeded", "param": None, "message": None,
        "level": "tenant", "period": "month"}
    assert isinstance(await found.reserve(ADA, 0.1), Hold)  # what is left still fits


async def test_every_level_without_room_is_named_and_refuse_wins(store: BudgetStore) -> None:
    found = budgets(store, {"tenant": "school", "usd": 1},
                    {"tenant": "school", "group": "class-7a", "usd": 1, "on_exhausted": "refuse"})
    refused = await found.reserve(ADA, 2.0)
    assert levels_named(refused) == [("tenant", "month"), ("group", "month"),
                                     ("learner_share", "month")]
    assert isinstance(refused, Refusal) and refused.first.level == "group"
    assert refused.whose(ADA) == "group 'class-7a'"


async def test_a_learners_share_is_the_pool_among_its_active_learners(store: BudgetStore) -> None:
    found = budgets(store, {"tenant": "school", "group": "class-7a", "usd": 4})
    assert isinstance(await found.reserve(ADA, 1.0), Hold)  # alone: the whole pool is ada's share
    assert levels_named(await found.reserve(BEA, 2.5)) == [("learner_share", "month")]
    assert isinstance(await found.reserve(BEA, 1.5), Hold)  # two active learners: 2 each
    assert levels_named(await found.reserve(ADA, 1.2)) == [("learner_share", "month")]
    assert isinstance(await found.reserve(ADA, 1.0), Hold)
    shares = [s for s in await found.by_level(ADA) if s["level"] == "learner_share"]
    assert [(s["limit_usd"], s["held_usd"], s["remaining_usd"]) for s in shares] == [
        (2.0, 2.0, 0.0)]


async def test_a_learner_cap_limits_one_learner_even_alone(store: BudgetStore) -> None:
    found = budgets(store, {"tenant": "school", "group": "class-7a", "usd": 1,
                            "learner_cap_usd": 0.3})
    assert levels_named(await found.reserve(ADA, 0.31)) == [("learner_share", "month")]
    assert isinstance(await found.reserve(ADA, 0.3), Hold)
    assert isinstance(await found.reserve(BEA, 0.3), Hold)


async def test_requests_without_a_group_or_user_spend_the_levels_they_belong_to(
        store: BudgetStore) -> None:
    found = budgets(store, {"tenant": "school", "usd": 1},
                    {"tenant": "school", "group": "class-7a", "usd": 1})
    assert levels_named(await found.reserve(Scope("school", None, "class-7a"), 2)) == [
        ("tenant", "month"), ("group", "month")]  # no learner: no share
    assert levels_named(await found.reserve(Scope("school", "ada"), 2)) == [("tenant", "month")]
    assert isinstance(await found.reserve(Scope("other-school", "ada", "class-7a"), 2), Hold)


async def test_a_term_is_spent_within_its_dates_only(store: BudgetStore) -> None:
    clock = Clock.at_utc("2026-12-20 23:59:59")
    found = budgets(store, {"tenant": "school", "usd": 5, "period": "term",
                            "start": "2026-09-01", "end": "2026-12-20"}, clock=clock)
    hold = await found.reserve(ADA, 2.0)
    assert isinstance(hold, Hold) and hold.counters[0].key == "school\x1d:t:2026-09-01:2026-12-20"
    await found.settle(hold, 2.0)
    clock.set_utc("2026-12-21 00:00:00")
    assert levels_named(await found.reserve(ADA, 0.01)) == [("tenant", "term")]
    clock.set_utc("2026-10-01 00:00:00")
    (term,) = await found.by_level(ADA)
    assert (term["spent_usd"], term["remaining_usd"], term["start"], term["end"]) == (
        2.0, 3.0, "2026-09-01", "2026-12-20")


async def test_a_users_level_replaces_the_per_user_budget_in_its_tenant(store: BudgetStore) -> None:
    found = budgets(store, {"tenant": "school", "user": "ada", "usd": 5, "period": "week"},
                    default=BudgetConfig(daily_usd=1))
    assert isinstance(await found.reserve(ADA, 3.0), Hold)  # over the default's day: a week of 5
    assert levels_named(await found.reserve(Scope("other", "ada"), 3.0)) == [("user", "day")]
    assert await found.status(ADA) == {"weekly_limit_usd": 5.0, "weekly_spent_usd": 0.0,
                                       "weekly_held_usd": 3.0}


async def test_a_memory_store_is_seeded_with_each_levels_spend_since_its_term_began() -> None:
    asked: list[str] = []

    async def ledger(since: str) -> list[SpendRow]:
        asked.append(since)
        return [("school", "class-7a", "ada", "2026-09-15", 1.0),
                ("school", "class-7a", "bea", "2026-11-25", 0.5),
                ("school", None, "ada", "2026-11-24", 0.25),
                ("school", "class-7b", "ada", "2026-08-31", 9.0)]  # before the term

    found = Budgets(BudgetsConfig(levels=[
        Level(tenant="school", usd=100, period="term", start="2026-09-01", end="2026-12-20"),
        Level(tenant="school", group="class-7a", usd=10, period="month")]),
        MemoryBudgetStore(), clock=Clock.at_utc("2026-11-25 12:00:00"), seed=ledger)
    spent = {(s["level"], s["user"]): s["spent_usd"] for s in await found.by_level(BEA)}
    assert spent == {("tenant", None): 1.75, ("group", None): 0.5, ("learner_share", "bea"): 0.5}
    assert asked == ["2026-09-01"]


async def test_levels_set_through_the_api_are_seen_by_every_replica(database: Database) -> None:
    ledgers = [Ledger(database.open(owned=True), LedgerConfig()) for _ in range(2)]
    clock = Clock(0.0)
    configured = [Level(tenant="school", group="class-7a", usd=1)]
    here, there = (Levels(configured, ledger, refresh_s=5, clock=clock) for ledger in ledgers)
    try:
        assert await there.current() == {("school", "class-7a", None): LevelBudget(usd=1)}
        await here.put(("school", "class-7a", None), LevelBudget(usd=3, period="week"))
        await here.put(("school", None, "ada"), LevelBudget(usd=0.5))
        assert (await here.current())[("school", "class-7a", None)].usd == 3  # here: at once
        assert (await there.current())[("school", "class-7a", None)].usd == 1
        clock.advance(5)
        assert await there.current() == {("school", "class-7a", None): LevelBudget(
            usd=3, period="week"), ("school", None, "ada"): LevelBudget(usd=0.5)}
        assert there.source(("school", "class-7a", None)) == "api"
        await here.put(("school", "class-7a", None), None)  # removed: the config's comes back
        clock.advance(5)
        assert (await there.current())[("school", "class-7a", None)] == LevelBudget(usd=1)
        assert there.source(("school", "class-7a", None)) == "config"
        assert there.source(("school", "class-9", None)) is None
    finally:
        for ledger in ledgers:
            await ledger.close()


async def test_concurrent_learners_cannot_overrun_their_group_or_school(store: BudgetStore) -> None:
    found = budgets(store, {"tenant": "school", "usd": 3},
                    {"tenant": "school", "group": "class-7a", "usd": 2})
    learners = [Scope("school", f"learner-{n % 5}", "class-7a") for n in range(60)]
    holds = await asyncio.gather(*(found.reserve(scope, 0.1) for scope in learners))
    assert sum(isinstance(hold, Hold) for hold in holds) == 20  # the pool's worth, no more
    statuses = await found.by_level(learners[0])
    held = {s["level"]: s["held_usd"] for s in statuses}
    assert held["group"] == pytest.approx(2.0) and held["tenant"] == pytest.approx(2.0)
    share = next(s for s in statuses if s["level"] == "learner_share")
    assert share["limit_usd"] == pytest.approx(0.4)  # the pool among its five active learners


async def test_a_level_set_mid_period_starts_from_the_ledgers_spend(store: BudgetStore,
                                                                     tmp_path: Path) -> None:
    asked: list[str] = []

    async def ledger(since: str) -> list[SpendRow]:
        asked.append(since)
        return [("school", "class-7a", "ada", "2026-11-24", 0.5),
                ("school", "class-7a", "bea", "2026-11-22", 9.0),  # the week before
                ("school", "class-7b", "ada", "2026-11-25", 7.0),  # another group
                ("other", "class-7a", "ada", "2026-11-25", 7.0)]  # another tenant

    kept = Ledger(open_store(f"sqlite:///{tmp_path}/usage.db"), LedgerConfig())
    found = Budgets(BudgetsConfig(), store, clock=Clock.at_utc("2026-11-25 12:00:00"),
                    levels=Levels([], kept), ledger=ledger)
    key = ("school", "class-7a", None)
    await found.set_level(key, LevelBudget(usd=2, period="week"))
    await found.set_level(key, LevelBudget(usd=3, period="week"))  # changed: counted once
    (group,) = await found.of_level(key)
    assert (group["spent_usd"], group["remaining_usd"]) == (0.5, 2.5)
    assert asked == ["2026-11-23"] * 2
    await found.set_level(("school", None, None), LevelBudget(usd=100, period="day"))
    assert [s["spent_usd"] for s in await found.of_level(("school", None, None))] == [7.0]
    await kept.close()
