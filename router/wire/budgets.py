"""The budget levels' admin API models (router/http/budgets.py): a level's budget as set (the
config's LevelBudget, its body) and what is spent of it now."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from core.budget_config import Action, LevelBudget, Period

LevelName = Literal["tenant", "group", "user"]


class LevelStatus(BaseModel):
    """One budget a request spends, in its current period: what is settled, held by requests in
    flight, and left."""

    level: Literal["tenant", "group", "learner_share", "user"] = Field(description=(
        "whose budget: learner_share is a learner's part of their group's"))
    tenant: str | None
    group: str | None
    user: str | None
    period: Period
    start: date = Field(description="the period's first day (UTC)")
    end: date = Field(description="the period's last day (UTC)")
    limit_usd: float = Field(description="a learner's share: their part of the group's budget now")
    spent_usd: float
    held_usd: float
    remaining_usd: float
    on_exhausted: Action


class BudgetLevel(BaseModel):
    """A level's budget: as set (through the API, or in the config file), and spent now."""

    level: LevelName
    tenant: str
    group: str | None = None
    user: str | None = None
    source: Literal["api", "config"] | None = Field(description=(
        "where the budget in force was set (None: no budget at this level)"))
    budget: LevelBudget | None
    status: list[LevelStatus] = Field(description="its current period")
