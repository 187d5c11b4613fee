"""A request's admission: whether it may run and what it may spend, before any provider is called.

`Caller` is who sends a request (key, tenant, group, user) and when it was admitted; its `Scope` is
whose budgets it spends. `Admission` takes the request's rate limits on arrival, reserves its
estimated tokens once its size is known, and decides what its runs may spend: an `Allowance`, the
only holder of budget (runs and embeddings alike), holds each attempt's estimate before it is made.
The meter (router/usage/meter.py) records what the request used and hands the holds back here to
settle."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

from core.config import ApiKeyConfig
from core.errors import BudgetExceeded, StorageUnavailable
from core.tiers import Tier
from router.run.attempts import Route
from router.run.fallback import OVER_BUDGET
from router.usage.budget_stores import Hold
from router.usage.budgets import Budgets, Refusal
from router.usage.ratelimit import RateLimiter
from router.usage.scopes import Scope, to_nano

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Caller:
    key: ApiKeyConfig
    user_id: str | None  # None: the request named no user
    request_id: str | None  # the caller's X-Request-Id (validated by the route)
    admitted: float  # wall time: the periods its spend counts in
    idempotency_key: str | None = None
    group: str | None = None  # the request's group (a class) within the tenant, if it named one

    @property
    def tenant(self) -> str:
        """The tenant the user id belongs to: the key's."""
        return self.key.tenant_id

    @property
    def user(self) -> str:
        """The user as the ledger records it: "" for a request that named no user (no user id is
        empty), so that no user shares rows or counters with unnamed traffic."""
        return self.user_id or ""

    @property
    def scope(self) -> Scope:
        return Scope(self.tenant, self.user_id, self.group)


@dataclass
class Allowance:
    """What one run (or embedding call) holds of its caller's budgets: the run's BudgetGate."""

    budgets: Budgets
    caller: Caller
    hold: Hold | None = None
    refused: Refusal | None = None  # the counters without room, when the last cover failed

    async def refusal(self, spent_usd: float, next_usd: float) -> str | None:
        try:
            return None if await self.cover(spent_usd + next_usd) else OVER_BUDGET
        except StorageUnavailable:
            return "budget store unavailable"

    async def cover(self, usd: float) -> bool:
        """Hold `usd` in total (in the periods the request was admitted in), or False. Raises
        StorageUnavailable when the budget store does not answer."""
        if usd <= 0 or (self.hold is not None and to_nano(usd) <= self.hold.amount):
            return True
        if self.hold is None:
            found = await self.budgets.reserve(self.caller.scope, usd, self.caller.admitted)
        else:
            found = await self.budgets.top_up(self.hold, usd)
        if isinstance(found, Refusal):
            self.refused = found
            return False
        self.hold = found
        return True

    def exceeded(self, message: str) -> BudgetExceeded:
        """The 402 for a run whose attempts this allowance refused (`message`), naming the level."""
        refused = self.refused
        if refused is None:
            return BudgetExceeded(message)
        return refused.error(f"{message}; over the budget of {refused.whose(self.caller.scope)}")

    def holds(self) -> bool:
        """Whether it holds budget on any counter (a caller without budgets holds none)."""
        return self.hold is not None and bool(self.hold.counters)


def _free(routes: list[Route], why: str) -> list[Route]:
    """The free candidates, each saying why the paid ones were left out."""
    return [replace(r, candidate=replace(
                r.candidate, reason=f"{why}, downgraded to a free model; {r.candidate.reason}"))
            for r in routes if r.candidate.estimated_cost <= 0]


class Admission:
    def __init__(self, caller: Caller, budgets: Budgets, limiter: RateLimiter,
                 tier: Tier = "interactive"):
        self.caller = caller
        self.tier = tier  # core/tiers.py: the local queue's priority, the spill-over wait
        self.downgraded = False  # the budget narrowed the ranking to free models
        self.reserved_tokens: int | None = None  # of the token rate limits, once reserved
        self._budgets = budgets
        self._limiter = limiter

    async def admit(self) -> None:
        """Take one request of the key's and the user's request rate limits (429 when spent)."""
        await self._limiter.admit(self.caller.key, self.caller.user_id)

    async def reserve_tokens(self, tokens: int) -> None:
        """Reserve the request's estimated tokens of its token rate limits (once per request)."""
        if self.reserved_tokens is None:
            await self._limiter.reserve(self.caller.key, self.caller.user_id, tokens)
            self.reserved_tokens = tokens

    async def routes(self, routes: list[Route], tokens: int) -> tuple[list[Route], Allowance | None]:
        """What a run of about `tokens` tokens (prompt and max_tokens) may do. The request's first
        run reserves its tokens of the rate limits. The first candidate's estimated cost is held
        now; every later attempt (fallback, retry, continuation) tops the hold up to what the run
        has spent plus that attempt's estimate first, or is skipped. When the budget cannot cover
        the first candidate: only the free candidates (a downgrade), or BudgetExceeded. When the
        budget store does not answer, the free candidates too (the learner is served, no money is
        spent unchecked), or StorageUnavailable (503) when there are none."""
        await self.reserve_tokens(tokens)
        if not routes:
            return routes, None
        allowance = Allowance(self._budgets, self.caller)
        first = routes[0].candidate.estimated_cost
        try:
            covered = await allowance.cover(first)
        except StorageUnavailable:
            unchecked = _free(routes, "budget store unavailable")
            if not unchecked:
                raise
            self.downgraded = True
            return unchecked, allowance
        refused = allowance.refused
        if covered or refused is None:
            return routes, allowance
        whose = refused.whose(self.caller.scope)
        free = _free(routes, f"budget exhausted ({whose})")
        if free and refused.action == "downgrade":
            self.downgraded = True
            return free, allowance
        raise refused.error(f"the spending budget of {whose} cannot cover this request "
                            f"(estimated ${first:.6f}); {refused.resets()}"
                            + ("" if free else "; no free local model can serve it"))

    async def allowance(self, usd: float, instead: str) -> Allowance | None:
        """An allowance holding `usd` for one call that is never downgraded (embeddings: vectors of
        different models do not mix), None when the caller's budgets do not limit it, or
        BudgetExceeded saying what to do `instead`."""
        if usd <= 0:
            return None
        allowance = Allowance(self._budgets, self.caller)
        if not await allowance.cover(usd):
            refused = allowance.refused
            assert refused is not None
            raise refused.error(f"the spending budget of {refused.whose(self.caller.scope)} "
                                f"cannot cover this request (estimated ${usd:.6f}); {instead}")
        return allowance if allowance.holds() else None

    async def settle(self, holds: list[tuple[Hold, float]], tokens: int, record_id: str) -> None:
        """Settle the token reservation and each hold to what the request (the ledger's
        `record_id`) really used."""
        await self._limiter.settle(self.caller.key, self.caller.user_id, self.reserved_tokens or 0,
                                   tokens)  # fails open: never raises for an unavailable store
        for hold, usd in holds:
            await self._settle_hold(hold, usd, record_id)

    async def _settle_hold(self, hold: Hold, usd: float, record_id: str) -> None:
        """Settle, retrying while the budget store is unavailable; until then the hold keeps the
        estimate counted, and once it expires, the spend is missing from the counters (logged)."""
        give_up = time.monotonic() + self._budgets.hold_ttl_s
        delay = 0.5
        while True:
            try:
                await self._budgets.settle(hold, usd)
                return
            except StorageUnavailable as error:
                wait = max(delay, error.retry_after or 0.0)
                if time.monotonic() + wait > give_up:
                    log.error("could not settle the budget of request %s (%s): $%.6f not counted",
                              record_id, error.message, usd)
                    return
                await asyncio.sleep(wait)
                delay = min(delay * 2, 30.0)
