"""The levels' budgets in force (router/usage/scopes.py counts them): the config's `budgets.levels`,
and in their place those set through the admin API (router/http/budgets.py), kept in the ledger's
database (table budget_levels) so that every replica and every restart sees them.

A replica reads what changed in the table at most every `levels_refresh_s` (rows written since its
last read, less a minute for replicas whose clocks differ); a change made through this replica is in
force here at once. A removed level stays as a row without a budget, so that the others see it go.
When the database does not answer, the levels last read stay in force (the config's before the
first read), logged, and the table is read again at the next refresh."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

from pydantic import ValidationError

from core.budget_config import Level, LevelBudget
from core.errors import ModelUnavailable, StorageUnavailable
from router.usage.ledger import Ledger
from router.usage.scopes import LevelKey

log = logging.getLogger("ray.serve")
SKEW_S = 60.0  # rows written this long before the last one seen are read again
Source = Literal["config", "api"]
_UPSERT = ("INSERT INTO budget_levels (tenant, group_id, user_id, budget, updated_at) "
           "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, group_id, user_id) DO UPDATE SET "
           "budget = excluded.budget, updated_at = excluded.updated_at")


class Levels:
    def __init__(self, configured: list[Level], ledger: Ledger | None, refresh_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self._configured = {level.key(): level.budget() for level in configured}
        self._stored: dict[LevelKey, LevelBudget | None] = {}  # None: removed through the API
        self._merged = dict(self._configured)
        self._ledger = ledger
        self._refresh_s = refresh_s
        self._clock = clock
        self._wall = wall
        self._read_at: float | None = None
        self._since = 0.0  # the last row's updated_at seen
        self._reading: asyncio.Future[None] | None = None  # the read in flight, shared

    async def current(self) -> dict[LevelKey, LevelBudget]:
        """Every level's budget in force: (tenant, group, user) -> its budget."""
        if self._ledger is not None and self._stale():
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(self._read())
            await asyncio.shield(self._reading)  # one caller leaving does not cancel the others'
        return self._merged

    def source(self, key: LevelKey) -> Source | None:
        if self._stored.get(key) is not None:
            return "api"
        return "config" if key in self._configured else None

    async def put(self, key: LevelKey, budget: LevelBudget | None) -> None:
        """Set a level's budget (None: remove the one set through the API, the config's comes
        back), for every replica."""
        tenant, group, user = key
        ledger = self._ledger_or_refuse()
        row = [tenant, group or "", user or "", budget.model_dump_json() if budget else "",
               self._wall()]
        try:
            await ledger.ready()
            await ledger.store.execute(_UPSERT, row)
        except Exception as error:
            log.warning("a budget level could not be written: %s", type(error).__name__)
            raise StorageUnavailable("the usage ledger's database is unavailable; retry "
                                     "shortly") from None
        self._stored[key] = budget
        self._merge()

    def _stale(self) -> bool:
        return self._read_at is None or self._clock() - self._read_at >= self._refresh_s

    async def _read(self) -> None:
        assert self._ledger is not None
        self._read_at = self._clock()
        try:
            await self._ledger.ready()
            rows = await self._ledger.store.fetch(
                "SELECT tenant, group_id, user_id, budget, updated_at FROM budget_levels "
                "WHERE updated_at >= ?", [self._since - SKEW_S])
        except Exception as error:  # the database: keep the levels last read
            log.warning("budget levels could not be read (%s); the last read stay in force",
                        type(error).__name__)
            return
        for tenant, group, user, text, updated in rows:
            self._stored[(str(tenant), group or None, user or None)] = _budget(str(text))
            self._since = max(self._since, float(updated))
        self._merge()

    def _merge(self) -> None:
        stored = {key: budget for key, budget in self._stored.items() if budget is not None}
        self._merged = {**self._configured, **stored}

    def _ledger_or_refuse(self) -> Ledger:
        if self._ledger is None:
            raise ModelUnavailable("budget levels set through the API are kept with the usage "
                                   "ledger, which is disabled in this deployment: set them in "
                                   "budgets.levels instead")
        return self._ledger


def _budget(text: str) -> LevelBudget | None:
    if not text:
        return None
    try:
        return LevelBudget.model_validate_json(text)
    except ValidationError:
        log.error("a stored budget level is not valid today (kept out): %s", text[:200])
        return None
