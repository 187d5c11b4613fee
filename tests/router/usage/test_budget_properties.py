"""Budget stores against a model, memory and Redis, under random interleavings of reserve, failed
attempts, fallback top-ups, settle, release, abandoned holds and their expiry, store outages, and
clock jumps across UTC days, ISO weeks and months. After every step the store holds exactly what the model
says, and:
- no counter goes negative, and no counter's settled plus held spend exceeds its limit (a request
  never spends more than its hold, which covers what it spent plus its next attempt's estimate);
- every hold is settled or expires: once everything open has expired, nothing is held, and what is
  settled is exactly the sum of the settlements of each period."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.budget_config import BudgetConfig, BudgetsConfig
from core.errors import StorageUnavailable
from router.usage.budget_stores import BudgetStore, Counter, Hold, MemoryBudgetStore, RedisBudgetStore
from router.usage.budgets import Budgets, Scope, to_nano
from router.usage.sharedstate import SharedState, StateUnavailable
from tests.conftest import RedisServer
from tests.fakes.clock import Clock, utc_time

USERS = BudgetsConfig(users={"u0": BudgetConfig(daily_usd=0.5),
                             "u1": BudgetConfig(daily_usd=0.3, monthly_usd=1.0),
                             "u2": BudgetConfig(weekly_usd=0.4, monthly_usd=0.6)})
HOLD_TTL_S = 60.0
START = utc_time("2026-01-30 20:00:00")  # a Friday: day, week and month boundaries come soon

cents = st.integers(1, 60)
fraction = st.integers(0, 4)  # quarters of what is left of a hold
Step = tuple[str, int, int]
reserve = st.tuples(st.just("reserve"), st.integers(0, 2), cents)  # user, estimate
steps = st.lists(st.one_of(
    reserve, reserve, reserve,
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

    async def hold(self, hold: Hold, ttl_s: float) -> bool:
        self._check()
        return await self.store.hold(hold, ttl_s)

    async def settle(self, hold: Hold, spent: int, ttl_s: float) -> None:
        self._check()
        await self.store.settle(hold, spent, ttl_s)

    async def usage(self, counters: Sequence[Counter]) -> list[tuple[int, int]]:
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

    def held(self, key: str) -> int:
        holds = [r.hold for r in self.open] + self.abandoned
        return sum(h.amount for h in holds if key in {c.key for c in h.counters})


async def play(script: list[Step], store: BudgetStore,
               expire: Callable[[list[Hold]], Awaitable[None]]) -> None:
    flaky, clock, model = Flaky(store), Clock(START), Model()
    budgets = Budgets(USERS, flaky, clock=clock, hold_ttl_s=HOLD_TTL_S)
    for action, a, b in script:
        request = model.open[a % len(model.open)] if model.open and a < 10 else None
        try:
            if action == "reserve":
                hold = await budgets.reserve(Scope(None, f"u{a}"), b / 100)
                if hold is not None:
                    model.open.append(Request(hold))
                    model.seen |= {c.key: c for c in hold.counters}
            elif action == "attempt_fails" and request:
                request.spent += (request.hold.amount - request.spent) * b // 4
            elif action == "fallback" and request:
                topped = await budgets.top_up(request.hold, (request.spent + to_nano(b / 100)) / 1e9)
                if topped is not None:
                    assert topped.amount >= request.spent + to_nano(b / 100)
                    request.hold = topped
            elif action in ("settle", "release") and request:
                spent = request.spent + (request.hold.amount - request.spent) * b // 4
                spent = spent if action == "settle" else 0
                await budgets.settle(request.hold, spent / 1e9)
                model.open.remove(request)
                for counter in request.hold.counters:
                    model.settled[counter.key] = model.settled.get(counter.key, 0) + spent
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
    for counter, (settled, held) in zip(counters, found, strict=True):
        assert (settled, held) == (model.settled.get(counter.key, 0), model.held(counter.key))
        assert settled >= 0 and held >= 0
        assert settled + held <= counter.limit, counter


@settings(max_examples=150, deadline=None)
@given(steps)
def test_the_memory_store_keeps_its_invariants(script: list[Step]) -> None:
    ticks = Clock(0.0)
    store = MemoryBudgetStore(clock=ticks)

    async def expire(holds: list[Hold]) -> None:
        ticks.now += HOLD_TTL_S + 1

    asyncio.run(play(script, store, expire))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
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
