"""Budget periods as data: each period is one entry of PERIODS, which says which occurrence of it a
UTC day falls in (its `Window`: the key its counters carry, its first day and the day after its
last). A term is the one period with dates of its own (a school's, `start` to `end` included).
Budgets (router/usage/budgets.py) count, seed and report every period through these alone."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from core.budget_config import Calendar, Period

DAY_S = 86_400


@dataclass(frozen=True)
class Window:
    """One occurrence of a period, in whole UTC days."""

    period: Period
    key: str  # in counter keys: "d:2026-11-25", "w:2026-W48", "m:2026-11", "t:2026-09-01:2026-12-20"
    first: date
    after: date  # the day after its last

    @property
    def start(self) -> float:
        return _unix(self.first)

    @property
    def end(self) -> float:
        return _unix(self.after)

    @property
    def last(self) -> date:
        return self.after - timedelta(days=1)

    def holds(self, day: str) -> bool:
        """Whether the UTC day ("2026-11-25", as the ledger records it) falls in this window."""
        return self.first.isoformat() <= day < self.after.isoformat()

    def covers(self, at: float) -> bool:
        """Whether the Unix time `at` falls in this window (a term's may not)."""
        return self.start <= at < self.end


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


PERIODS: dict[Calendar, Callable[[date], Window]] = {"day": _day, "week": _week, "month": _month}


def window(period: Calendar, at: float) -> Window:
    """The occurrence of `period` that the Unix time `at` falls in."""
    return _window(period, int(at // DAY_S))


def term(start: date, end: date) -> Window:
    """A term from `start` to `end`, both included."""
    return Window("term", f"t:{start.isoformat()}:{end.isoformat()}", start,
                  end + timedelta(days=1))


@functools.lru_cache(maxsize=16)
def _window(period: Calendar, unix_day: int) -> Window:
    return PERIODS[period](date(1970, 1, 1) + timedelta(days=unix_day))


def _unix(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
