"""Budgets against a model, memory and Redis, under random interleavings of concurrent requests'
steps: reserve (learners of a school, in a class or in none), failed attempts, fallback top-ups,
settle, release, abandoned holds and their expiry, store outages, and clock jumps across UTC days,
ISO weeks, months and the end of a term. Every level is there: the tenant's, a group's pool with
its learners' fair shares, a group with a learner cap, a user's term, and per-user budgets. After
every step the store holds exactly what the model says, and:
- a hold is refused exactly when one of its counters has no room for it, and names exactly those
  counters: no level overruns, and no request is refused while every level has room for it;
- a learner's share, when taken, is within the pool divided by its active learners;
- no counter goes negative, and no level's settled plus held spend exceeds its limit (a request
  never spends more than its hold, which covers what it spent plus its next attempt's estimate:
  the ledger exceeds a level by at most what one request cost above its estimate);
- every hold is settled or expires: once everything open has expired, nothing is held, and what is
  settled is exactly the sum of the settlements of each period."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.budget_config import BudgetConfig, BudgetsConfig, Level
from core.errors import StorageUnavailable
from router.usage.budget_stores import (
    BudgetStore,
    Counter,
    Hold,
    MemoryBudgetStore,
    RedisBudgetStore,
    Usage,
)
from router.usage.budgets import Budgets, Refusal
from router.usage.scopes import Scope, counters, to_nano
from router.usage.sharedstate import SharedState, StateUnavailable
from tests.conftest import RedisServer
from tests.fakes.clock import Clock, utc_time

CONFIG = BudgetsConfig(
    users={"u0": BudgetConfig(daily_usd=0.9), "u1": BudgetConfig(daily_usd=0.7, monthly_usd=2.0),
           "u2": BudgetConfig(weekly_usd=0.8, monthly_usd=1.5)},
    levels=[Level(tenant="school", usd=3.5, period="month"),
            Level(tenant="school", group="g0", usd=0.9, period="week"),  # fair shares
            Level(tenant="school", group="g1", usd=0.6, period="day", learner_cap_usd=0.25,
                  on_exhausted="refuse"),
            Level(tenant="school", user="u3", usd=1.2, period="term", start="2026-01-26",
                  end="2026-02-01")])
GROUPS = ("g0", "g1", None)
HOLD_TTL_S = 60.0
START = utc_time("2026-01-30 20:00:00")  # a Friday: day, week and month boundaries come soon

cents = st.integers(1, 60)
fraction = st.integers(0, 4)  # quarters of what is left of a hold
Step = tuple[str, int, int]
reserve = st.tuples(st.just("reserve"), st.integers(0, 11), cents)  # user and group, estimate
steps = st.lists(st.one_of(
    reserve, reserve, reserve, reserve, reserve,
    st.tuples(st.just("attempt_fails"), st.integers(0, 9), fraction),  # spends some of its hold
    st.tuples(st.just("fallback"), st.integers(0, 9), cents),  # top up: spent + next estimate
    st.tuples(st.just("settle"), st.integers(0, 9), fraction),
    st.tuples(st.just("release"), st.integers(0, 9), st.just(0)),  # settle at nothing
    st.tuples(st.just("abandon"), st.integers(0, 9), st.just(0)),  # its replica died
    st.tuples(st.just("expire"), st.just(0), st.just(0)),  # time passes past every open hold
    st.tuples(st.just("outage"), st.just(0), st.just(0)),  # the next store call fails
    st.tuples(st.just("advance"), st.integers(1, 30), st.just(0)),  # hours of wall clock
), min_size=5, max_size=40)


class Flaky:
    """A store whose next call fails when told to, like Redis behind its open breaker."""

    def __init__(self, store: BudgetStore):
        self.store = store
        self.down = False
        self.failed = False  # a call failed because it was told to

    def _check(self) -> None:
        if self.down:
            self.down, self.failed = False, True
            raise StateUnavailable("down", 1.0)

    async def take(self, hold: Hold, ttl_s: float) -> tuple[Counter, ...]:
        self._check()
        return await self.store.take(hold, ttl_s)

    async def settle(self, hold: Hold, spent: int, ttl_s: float) -> None:
        self._check()
        await self.store.settle(hold, spent, ttl_s)

    async def usage(self, counters: Sequence[Counter]) -> list[Usage]:
        return await self.store.usage(counters)


@dataclass
class Request:
    hold: Hold
    spent: int = 0  # by failed attempts, within the hold


@dataclass
class Model:
    settled: dict[str, int] = field(default_factory=dict)  # counter key -> settled spend
    open: list[Request] = field(default_factory=list)  # holds of live requests
    abandoned: list[Hold] = field(default_factory=list)  # holds nobody will settle
    seen: dict[str, Counter] = field(default_factory=dict)  # every counter used, by key
    members: dict[str, set[str]] = field(default_factory=dict)  # a pool -> its learners' shares

    def held(self, key: str) -> int:
        holds = [r.hold for r in self.open] + self.abandoned
        return sum(h.amount for h in holds if key in {c.key for c in h.counters})

    def limit(self, counter: Counter) -> int:
        if counter.members is None:
            return counter.limit
        return counter.share(len(self.members.get(counter.members, set()) | {counter.key}))

    def without_room(self, hold: Hold, current: int) -> tuple[Counter, ...]:
        """The counters that cannot take `hold` (held at `current` so far)."""
        extra = hold.amount - current
        if extra <= 0:
            return ()
        return tuple(c for c in hold.counters
                     if self.settled.get(c.key, 0) + self.held(c.key) + extra > self.limit(c))

    def join(self, hold: Hold) -> None:
        self.seen |= {c.key: c for c in hold.counters}
        for counter in hold.counters:
            if counter.members is not None:
                self.members.setdefault(counter.members, set()).add(counter.key)

    def expect(self, found: Hold | Refusal, asked: Hold, current: int = 0) -> bool:
        """Whether the store took `asked`; asserts it did exactly what the model says."""
        lacking = self.without_room(asked, current)
        if lacking:
            assert isinstance(found, Refusal) and found.counters == lacking, (found, lacking)
            return False
        assert isinstance(found, Hold), (found, asked)
        for counter in asked.counters:  # a share taken is within its part of the pool
            assert self.settled.get(counter.key, 0) + self.held(counter.key) - current \
                + asked.amount <= self.limit(counter)
        return True


async def play(script: list[Step], store: BudgetStore,
               expire: Callable[[list[Hold]], Awaitable[None]]) -> None:
    flaky, clock, model = Flaky(store), Clock(START), Model()
    budgets = Budgets(CONFIG, flaky, clock=clock, hold_ttl_s=HOLD_TTL_S)
    for action, a, b in script:
        request = model.open[a % len(model.open)] if model.open and a < 10 else None
        try:
            if action == "reserve":
                scope = Scope("school", f"u{a % 4}", GROUPS[a // 4])
                asked = Hold("?", tuple(counters(scope, clock.now, CONFIG,
                                                 await budgets.levels.current())), to_nano(b / 100))
                hold = await budgets.reserve(scope, b / 100)
                if model.expect(hold, asked) and isinstance(hold, Hold):
                    model.open.append(Request(hold))
                    model.join(hold)
            elif action == "attempt_fails" and request:
                request.spent += (request.hold.amount - request.spent) * b // 4
            elif action == "fallback" and request:
                wanted = request.spent + to_nano(b / 100)
                asked = replace(request.hold, amount=max(request.hold.amount, wanted))
                topped = await budgets.top_up(request.hold, wanted / 1e9)
                if model.expect(topped, asked, request.hold.amount) and isinstance(topped, Hold):
                    assert topped.amount >= wanted
                    request.hold = topped
                    model.join(topped)
            elif action in ("settle", "release") and request:
                spent = request.spent + (request.hold.amount - request.spent) * b // 4
                spent = spent if action == "settle" else 0
                await budgets.settle(request.hold, spent / 1e9)
                model.open.remove(request)
                for counter in request.hold.counters:
                    model.settled[counter.key] = model.settled.get(counter.key, 0) + spent
                if spent:
                    model.join(request.hold)
            elif action == "abandon" and request:
                model.open.remove(request)
                model.abandoned.append(request.hold)
            elif action == "expire":
                model.abandoned += [r.hold for r in model.open]
                model.open.clear()
                await expire(model.abandoned)
                model.abandoned.clear()
            elif action == "outage":
                flaky.down = True
            elif action == "advance":
                clock.now += a * 3600
        except StorageUnavailable:
            assert flaky.failed  # the outage, and nothing else: nothing changed
            flaky.failed = False
        await check(store, model)
    model.abandoned += [r.hold for r in model.open]
    model.open.clear()
    await expire(model.abandoned)
    model.abandoned.clear()
    await check(store, model)


async def check(store: BudgetStore, model: Model) -> None:
    counters = list(model.seen.values())
    found = await store.usage(counters)
    for counter, usage in zip(counters, found, strict=True):
        settled, held = usage.settled, usage.held
        assert (settled, held) == (model.settled.get(counter.key, 0), model.held(counter.key))
        assert settled >= 0 and held >= 0
        if counter.members is None:  # a share shrinks as learners join: checked when taken
            assert settled + held <= counter.limit, counter


# Scripts every run plays first: a newcomer's share of a pool, a share topped up past it, a
# learner cap, a term's end, an outage mid-way.
SHARES: list[Step] = [("reserve", 0, 10), ("reserve", 1, 50), ("reserve", 2, 30),
                      ("fallback", 0, 40), ("settle", 1, 4), ("reserve", 3, 45)]
CAPPED: list[Step] = [("reserve", 4, 20), ("reserve", 4, 10), ("reserve", 5, 26), ("outage", 0, 0),
                      ("reserve", 6, 25), ("reserve", 7, 60), ("settle", 0, 2)]
TERM: list[Step] = [("reserve", 3, 60), ("settle", 0, 4), ("advance", 30, 0), ("advance", 30, 0),
                    ("reserve", 11, 1), ("reserve", 3, 30)]


@settings(max_examples=400, deadline=None)
@given(steps)
@example(SHARES)
@example(CAPPED)
@example(TERM)
def test_the_memory_store_keeps_its_invariants(script: list[Step]) -> None:
    ticks = Clock(0.0)
    store = MemoryBudgetStore(clock=ticks)

    async def expire(holds: list[Hold]) -> None:
        ticks.now += HOLD_TTL_S + 1

    asyncio.run(play(script, store, expire))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
@example(SHARES)
@example(CAPPED)
@example(TERM)
def test_the_redis_store_keeps_its_invariants(own_redis: RedisServer, script: list[Step]) -> None:
    async def scenario() -> None:
        state = SharedState.connect(own_redis.url)
        store = RedisBudgetStore(state, prefix=f"test:budget-model:{uuid.uuid4().hex}:")

        async def expire(holds: list[Hold]) -> None:  # what each hold's TTL does, sooner
            for hold in holds:
                await state.client.pexpire(store.hold_key(hold.id), 1)
            await asyncio.sleep(0.003)

        try:
            await play(script, store, expire)
        finally:
            await state.client.aclose()

    asyncio.run(scenario())
