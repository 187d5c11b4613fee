"""The budgets' config. Per-user limits per calendar period (`BudgetConfig`: day, week, month) and
the levels of a school (`Level`: a tenant, a group within it, a user within it), each with one
budget for its period (a calendar period, or a term with dates of its own). The periods' dates are
router/usage/periods.py's; each `<adjective>_usd` field of BudgetConfig is one period's limit."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.config_model import ConfigModel

Calendar = Literal["day", "week", "month"]
Period = Literal["day", "week", "month", "term"]
ADJECTIVES: dict[Calendar, str] = {"day": "daily", "week": "weekly", "month": "monthly"}
Action = Literal["downgrade", "refuse"]
# A tenant, group or user id: what the wire's Identifier allows (router/wire/rules.py).
Name = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
ON_EXHAUSTED = ("when the budget cannot cover a request: `downgrade` to a free (local) model if the "
                "plan has one, else refuse with 402; `refuse` always refuses")


class BudgetConfig(ConfigModel):
    """A user's limits in USD, each per UTC period (weeks start on Monday, ISO 8601)."""

    daily_usd: float | None = Field(None, ge=0)
    weekly_usd: float | None = Field(None, ge=0)
    monthly_usd: float | None = Field(None, ge=0)
    on_exhausted: Action = Field("downgrade", description=ON_EXHAUSTED)

    def limits(self) -> dict[Calendar, float]:
        """The period of each limit set, and the limit."""
        found = {period: getattr(self, f"{adjective}_usd") for period, adjective in ADJECTIVES.items()}
        return {period: usd for period, usd in found.items() if usd is not None}

    def limited(self) -> bool:
        return bool(self.limits())


class LevelBudget(ConfigModel):
    """One level's budget: `usd` per `period` (UTC), and what happens when it cannot cover a
    request. A term runs from `start` to `end`, both included; outside it nothing may be spent."""

    usd: float = Field(ge=0, le=1e9, description="the limit per period, in USD")
    period: Period = "month"
    start: date | None = Field(None, description="a term's first day (term only)")
    end: date | None = Field(None, description="a term's last day (term only)")
    on_exhausted: Action = Field("downgrade", description=ON_EXHAUSTED)
    learner_cap_usd: float | None = Field(None, ge=0, le=1e9, description=(
        "groups only: what one learner may spend of the group's budget per period; omitted, an "
        "equal share among the learners active in the group this period (the pool divided by "
        "their number, the newcomer counted)"))

    @model_validator(mode="after")
    def _dates_for_terms(self) -> LevelBudget:
        if self.period == "term":
            if self.start is None or self.end is None:
                raise ValueError("a term needs its start and end dates (YYYY-MM-DD)")
            if self.end < self.start:
                raise ValueError(f"the term ends ({self.end}) before it starts ({self.start})")
        elif self.start is not None or self.end is not None:
            raise ValueError(f"start and end are a term's; a {self.period} has its own dates")
        return self


class Level(LevelBudget):
    """A budget at one level: the tenant's (a school: only `tenant`), a group's within it (a class:
    `group`) or a user's within it (a learner: `user`, replacing `budgets.users` / `default` for
    them in this tenant)."""

    tenant: Name
    group: Name | None = None
    user: Name | None = None

    @model_validator(mode="after")
    def _one_level(self) -> Level:
        if self.group is not None and self.user is not None:
            raise ValueError("a level is a tenant's, a group's or a user's: name a group or a "
                             "user, not both (a learner's spend counts against every level above)")
        if self.learner_cap_usd is not None and self.group is None:
            raise ValueError("learner_cap_usd is a group's: what one learner may spend of it")
        return self

    def key(self) -> tuple[str, str | None, str | None]:
        return self.tenant, self.group, self.user

    def budget(self) -> LevelBudget:
        return LevelBudget.model_validate(self.model_dump(include=set(LevelBudget.model_fields)))


class BudgetsConfig(ConfigModel):
    """Spend limits. Per user, counted per tenant (a user id belongs to its key's tenant):
    `default` applies to every identified user; requests without a user id are limited only by an
    entry named `anonymous` in `users` (with counters of their own, apart from a user of that
    name). Per level (`levels`): a tenant's, a group's, a user's budget; a request spends every
    level it belongs to at once. Levels set through the admin API (/api/v1/ai/budgets) are kept
    with the ledger and replace these for their level."""

    default: BudgetConfig = Field(default_factory=BudgetConfig)
    users: dict[str, BudgetConfig] = Field(default_factory=dict)
    levels: list[Level] = Field(default_factory=list)
    levels_refresh_s: float = Field(5.0, gt=0, le=3600, description=(
        "how often a router replica reads the levels set through the admin API (another "
        "replica's change is in force within this)"))
    hold_ttl_s: float = Field(900.0, gt=0, description=(
        "a request's hold is released this long after it was last taken or topped up if it is "
        "never settled (its replica died): longer than any request runs"))

    @model_validator(mode="after")
    def _one_budget_per_level(self) -> BudgetsConfig:
        keys = [level.key() for level in self.levels]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"budgets.levels names {', '.join(twice)} more than once: one budget "
                             "per level")
        return self

    def for_user(self, user_id: str) -> BudgetConfig:
        return self.users.get(user_id, self.default)
