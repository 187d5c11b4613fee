"""Whose budgets a request spends (its `Scope`: tenant, group, user) and the counters that makes at a
time: one per period of each budget that applies, all held at once (router/usage/budgets.py).

- the tenant's level budget (a school), if set;
- its group's (a class), if the request names a group that has one; and the learner's share of
  it: at most `learner_cap_usd`, or else the pool divided by the group's active learners;
- its user's level budget in the tenant if set, else the per-user budget (`budgets.users.<id>` or
  `budgets.default`, a counter per calendar period).

Counter names (no id holds a control character, so none collides with another), each followed by
":" and its period's window key (router/usage/periods.py):
  tenant           "<tenant>\\x1d"
  group            "<tenant>\\x1e<group>"       (its active learners: "<group counter>:members")
  learner's share  "<tenant>\\x1e<group>\\x1f<user>"
  user             "<tenant>\\x1f<user>"        ("\\x00" for requests without a user; no tenant: the
                                             user alone)"""

from __future__ import annotations

from dataclasses import dataclass

from core.budget_config import BudgetConfig, BudgetsConfig, LevelBudget
from router.usage.budget_stores import Counter
from router.usage.periods import Window, term, window

NANO = 1_000_000_000
GRACE_S = 86_400  # a counter outlives its period by a day (requests admitted before its end settle)
ANONYMOUS = "anonymous"  # requests without a user id: limited only by a budget of this name
UNNAMED = "\x00"  # their counters' name: no user id can hold a control character

LevelKey = tuple[str, str | None, str | None]  # (tenant, group, user): a tenant's, group's, user's


@dataclass(frozen=True)
class Scope:
    """Whose budgets a request spends: its tenant's (None: no tenant), its user's within the tenant
    (None: the request named no user) and its group's (a class, within the tenant)."""

    tenant: str | None
    user: str | None
    group: str | None = None

    def subject(self) -> str:
        """The user's counters' name: the user (or the unnamed requests) within the tenant. User
        ids belong to the tenant of the key that sent them."""
        name = UNNAMED if self.user is None else self.user
        return name if self.tenant is None else f"{self.tenant}\x1f{name}"


def user_budget(config: BudgetsConfig, scope: Scope) -> BudgetConfig | None:
    """The per-user budget, or None when their spend is not limited. The default budget is for
    identified users: requests without a user id have only a budget named `anonymous` (with
    counters of their own: a user named so is a user like any other)."""
    budget = (config.users.get(ANONYMOUS, BudgetConfig()) if scope.user is None
              else config.for_user(scope.user))
    return budget if budget.limited() else None


def counters(scope: Scope, now: float, config: BudgetsConfig,
             levels: dict[LevelKey, LevelBudget]) -> list[Counter]:
    """The counters a request of `scope` admitted at `now` spends."""
    found: list[Counter] = []
    tenant = scope.tenant
    if tenant is not None and (school := levels.get((tenant, None, None))) is not None:
        found.append(_level(f"{tenant}\x1d", "tenant", school, now))
    if tenant is not None and scope.group is not None:
        group = levels.get((tenant, scope.group, None))
        if group is not None:
            pool = _level(f"{tenant}\x1e{scope.group}", "group", group, now)
            found.append(pool)
            if scope.user is not None:
                found.append(_share(f"{tenant}\x1e{scope.group}\x1f{scope.user}", pool, group))
    own = levels.get((tenant, None, scope.user)) if tenant is not None and scope.user else None
    if own is not None:
        found.append(_level(scope.subject(), "user", own, now))
        return found
    budget = user_budget(config, scope)
    if budget is not None:
        for period, usd in budget.limits().items():
            occurrence = window(period, now)
            found.append(Counter(f"{scope.subject()}:{occurrence.key}", occurrence, to_nano(usd),
                                 _ttl(occurrence, now), "user", budget.on_exhausted))
    return found


def level_window(budget: LevelBudget, now: float) -> Window:
    if budget.period == "term":
        assert budget.start is not None and budget.end is not None  # LevelBudget checks
        return term(budget.start, budget.end)
    return window(budget.period, now)


def _level(name: str, level: str, budget: LevelBudget, now: float) -> Counter:
    """A level's counter; a term's outside its dates has nothing to spend."""
    occurrence = level_window(budget, now)
    limit = to_nano(budget.usd) if occurrence.covers(now) else 0
    return Counter(f"{name}:{occurrence.key}", occurrence, limit, _ttl(occurrence, now), level,
                   budget.on_exhausted)


def _share(name: str, pool: Counter, group: LevelBudget) -> Counter:
    """A learner's share of their group's pool: its cap, or the pool among its active learners."""
    key = f"{name}:{pool.window.key}"
    if group.learner_cap_usd is not None:
        limit = min(pool.limit, to_nano(group.learner_cap_usd))
        return Counter(key, pool.window, limit, pool.ttl_s, "learner_share", group.on_exhausted)
    return Counter(key, pool.window, pool.limit, pool.ttl_s, "learner_share", group.on_exhausted,
                   members=f"{pool.key}:members")


def _ttl(occurrence: Window, now: float) -> int:
    return max(1, int(occurrence.end - now)) + GRACE_S


def to_nano(usd: float) -> int:
    return round(usd * NANO)
