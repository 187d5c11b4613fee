"""The one fake clock: a callable that returns `now`, which a test moves by hand. It stands in for
the `clock` the breakers, rate limits, budgets, first-token limits and fallback take (time.monotonic
or time.time in production)."""

from __future__ import annotations

from calendar import timegm


def utc_time(text: str) -> float:
    """'2026-11-25 23:59:59' (UTC) as a Unix time."""
    day, clock = text.split()
    return float(timegm((*map(int, day.split("-")), *map(int, clock.split(":")), 0, 0, 0)))


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.start = self.now = now

    @classmethod
    def at_utc(cls, text: str) -> Clock:
        """A clock at a UTC time written '2026-11-25 23:59:59' (budgets count UTC days)."""
        return cls(utc_time(text))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set_utc(self, text: str) -> None:
        self.now = utc_time(text)
