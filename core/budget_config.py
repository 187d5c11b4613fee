"""The budgets' config: per-user spend limits per period (day, week, month). The periods' dates are
router/usage/periods.py's; each `<adjective>_usd` field here is one period's limit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config_model import ConfigModel

Period = Literal["day", "week", "month"]
ADJECTIVES: dict[Period, str] = {"day": "daily", "week": "weekly", "month": "monthly"}
Action = Literal["downgrade", "refuse"]


class BudgetConfig(ConfigModel):
    """A user's limits in USD, each per UTC period (weeks start on Monday, ISO 8601)."""

    daily_usd: float | None = Field(None, ge=0)
    weekly_usd: float | None = Field(None, ge=0)
    monthly_usd: float | None = Field(None, ge=0)
    on_exhausted: Action = Field("downgrade", description=(
        "when the budget cannot cover a request: `downgrade` to a free (local) model if the plan "
        "has one, else refuse with 402; `refuse` always refuses"))

    def limits(self) -> dict[Period, float]:
        """The period of each limit set, and the limit."""
        found = {period: getattr(self, f"{adjective}_usd") for period, adjective in ADJECTIVES.items()}
        return {period: usd for period, usd in found.items() if usd is not None}

    def limited(self) -> bool:
        return bool(self.limits())


class BudgetsConfig(ConfigModel):
    """Per-user spend limits, counted per tenant (a user id belongs to its key's tenant). `default`
    applies to every identified user; requests without a user id are limited only by an entry
    named `anonymous` in `users` (with counters of their own, apart from a user of that name)."""

    default: BudgetConfig = Field(default_factory=BudgetConfig)
    users: dict[str, BudgetConfig] = Field(default_factory=dict)
    hold_ttl_s: float = Field(900.0, gt=0, description=(
        "a request's hold is released this long after it was last taken or topped up if it is "
        "never settled (its replica died): longer than any request runs"))

    def for_user(self, user_id: str) -> BudgetConfig:
        return self.users.get(user_id, self.default)
