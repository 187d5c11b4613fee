"""Budget periods as data (router/usage/periods.py): which occurrence of a day, an ISO week and a
month a UTC time falls in, with its key and its bounds."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from router.usage.periods import PERIODS, window
from tests.fakes.clock import utc_time


@pytest.mark.parametrize(("at", "period", "key", "first", "after"), [
    ("2026-11-25 23:59:59", "day", "d:2026-11-25", "2026-11-25", "2026-11-26"),
    ("2026-12-02 12:00:00", "week", "w:2026-W49", "2026-11-30", "2026-12-07"),  # from November
    ("2027-01-01 08:00:00", "week", "w:2026-W53", "2026-12-28", "2027-01-04"),  # ISO year 2026
    ("2027-01-04 00:00:00", "week", "w:2027-W01", "2027-01-04", "2027-01-11"),
    ("2026-12-31 23:59:59", "month", "m:2026-12", "2026-12-01", "2027-01-01"),
    ("2028-02-29 10:00:00", "month", "m:2028-02", "2028-02-01", "2028-03-01"),
])
def test_each_period_names_its_occurrence_and_bounds(at: str, period: str, key: str, first: str,
                                                     after: str) -> None:
    found = window(period, utc_time(at))  # type: ignore[arg-type]
    assert (found.key, found.first, found.after) == (key, date.fromisoformat(first),
                                                     date.fromisoformat(after))
    assert found.start == utc_time(f"{first} 00:00:00") <= utc_time(at) < found.end
    assert found.end == utc_time(f"{after} 00:00:00")


def test_a_window_holds_the_ledger_days_from_its_first_to_its_last() -> None:
    week = window("week", utc_time("2026-12-02 12:00:00"))
    assert [week.holds(d) for d in ("2026-11-29", "2026-11-30", "2026-12-06", "2026-12-07")] == [
        False, True, True, False]


def test_every_day_of_a_year_falls_in_exactly_one_occurrence_of_each_period() -> None:
    for period in PERIODS:
        seen: dict[str, tuple[date, date]] = {}
        for n in range(400):
            at = utc_time("2026-01-01 12:00:00") + n * 86_400
            found = window(period, at)
            day = datetime.fromtimestamp(at, UTC).date().isoformat()
            assert found.holds(day)
            assert seen.setdefault(found.key, (found.first, found.after)) == (found.first,
                                                                                 found.after)
