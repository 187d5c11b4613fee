"""Budget periods as data: each period is one entry of PERIODS, which says which occurrence of it a
UTC day falls in (its `Window`: the key its counters carry, its first day and the day after its
last). Budgets (router/usage/budgets.py) count, seed and report every period through these alone."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from core.budget_config import Period

DAY_S = 86_400


@dataclass(frozen=True)
class Window:
    """One occurrence of a period, in whole UTC days."""

    period: Period
    key: str  # in counter keys: "d:2026-11-25", "w:2026-W48", "m:2026-11"
    first: date
    after: date  # the day after its last

    @property
    def start(self) -> float:
        return _unix(self.first)

    @property
    def end(self) -> float:
        return _unix(self.after)

    def holds(self, day: str) -> bool:
        """Whether the UTC day ("2026-11-25", as the ledger records it) falls in this window."""
        return self.first.isoformat() <= day < self.after.isoformat()


def _day(today: date) -> Window:
    return Window("day", f"d:{today.isoformat()}", today, today + timedelta(days=1))


def _week(today: date) -> Window:
    """The ISO week (Monday to Sunday), named by its ISO year and number."""
    year, week, weekday = today.isocalendar()
    monday = today - timedelta(days=weekday - 1)
    return Window("week", f"w:{year}-W{week:02d}", monday, monday + timedelta(days=7))


def _month(today: date) -> Window:
    first = today.replace(day=1)
    after = (first + timedelta(days=32)).replace(day=1)
    return Window("month", f"m:{today.isoformat()[:7]}", first, after)


PERIODS: dict[Period, Callable[[date], Window]] = {"day": _day, "week": _week, "month": _month}


def window(period: Period, at: float) -> Window:
    """The occurrence of `period` that the Unix time `at` falls in."""
    return _window(period, int(at // DAY_S))


@functools.lru_cache(maxsize=16)
def _window(period: Period, unix_day: int) -> Window:
    return PERIODS[period](date(1970, 1, 1) + timedelta(days=unix_day))


def _unix(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
