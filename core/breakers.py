"""Circuit breakers per (provider, model), with an injected clock.

    closed --(failures reach the threshold, or an auth failure)--> open
    open --(cooldown elapsed)--> half-open: up to `half_open_probes` requests go through
    half-open --success--> closed        half-open --failure--> open, cooldown x multiplier

A call let through in half-open state holds a probe until it reports (`record_success`,
`record_failure`) or gives it back (`release`: cancelled, skipped, or ended without a verdict); a
probe that never does expires after `probe_timeout_s`, so a breaker cannot stay half-open forever.
What counts is decided by error type and status code (`counts`), never by message text."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from core.errors import ProviderError, ServiceError

State = Literal["closed", "open", "half_open"]
Verdict = Literal["ignore", "failure", "fatal"]


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5  # consecutive failures that open the breaker
    failure_rate: float | None = None  # or: this share of failures over the window ...
    window_s: float = 60.0
    min_requests: int = 10  # ... once the window holds this many requests
    cooldown_s: float = 5.0
    cooldown_multiplier: float = 2.0
    max_cooldown_s: float = 300.0
    half_open_probes: int = 1
    probe_timeout_s: float = 60.0  # a probe that has not reported by then no longer holds its slot


def counts(error: ServiceError) -> Verdict:
    """A provider's outage counts; the caller's mistakes do not. A rejected key opens at once."""
    if not isinstance(error, ProviderError):
        return "ignore"
    if error.upstream_status in (401, 403):
        return "fatal"
    return "failure"


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[State], None] = lambda _: None):
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self._state: State = "closed"
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()  # (time, failed)
        self._trips = 0
        self._open_until = 0.0
        self._probes: list[float] = []  # when each probe in flight was let through

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        if value != self._state:
            self._state = value
            self._on_change(value)

    def available(self) -> bool:
        """Whether `allow()` would let a call through now (it takes nothing)."""
        if self.state == "open":
            return self._clock() >= self._open_until
        if self.state == "half_open":
            now = self._clock()
            self._probes = [t for t in self._probes if now - t < self._settings.probe_timeout_s]
            return len(self._probes) < self._settings.half_open_probes
        return True

    def allow(self) -> bool:
        """Let a call through (in half-open state, as a probe) or not."""
        if not self.available():
            return False
        if self.state == "open":
            self.state = "half_open"
            self._probes = []
        if self.state == "half_open":
            self._probes.append(self._clock())
        return True

    def release(self) -> None:
        """A call let through ends without a verdict: its probe, if any, is free again."""
        if self.state == "half_open" and self._probes:
            self._probes.pop(0)

    def reset(self) -> None:
        """Closed, with nothing remembered (an operator fixed the upstream)."""
        self.state = "closed"
        self._consecutive, self._trips, self._probes = 0, 0, []
        self._window.clear()

    def retry_after(self) -> float:
        return max(0.0, self._open_until - self._clock()) if self.state == "open" else 0.0

    def record_success(self) -> None:
        self._remember(failed=False)
        self._consecutive = 0
        if self.state == "half_open":
            self.state = "closed"
            self._trips = 0
            self._probes = []

    def record_failure(self, verdict: Verdict = "failure") -> None:
        if verdict == "ignore":
            self.release()  # the probe proved nothing; let another through
            return
        self._remember(failed=True)
        self._consecutive += 1
        if verdict == "fatal" or self.state == "half_open" or self._tripped():
            self._open()

    def snapshot(self) -> dict[str, object]:
        return {"state": self.state, "consecutive_failures": self._consecutive, "trips": self._trips,
                "retry_after_s": round(self.retry_after(), 3), "probes_in_flight": len(self._probes)}

    def _tripped(self) -> bool:
        if self._consecutive >= self._settings.failure_threshold:
            return True
        rate = self._settings.failure_rate
        if rate is None or len(self._window) < self._settings.min_requests:
            return False
        return sum(failed for _, failed in self._window) / len(self._window) >= rate

    def _open(self) -> None:
        settings = self._settings
        self._trips += 1
        cooldown = settings.cooldown_s * settings.cooldown_multiplier ** (self._trips - 1)
        self.state = "open"
        self._open_until = self._clock() + min(cooldown, settings.max_cooldown_s)
        self._probes = []
        self._consecutive = 0
        self._window.clear()

    def _remember(self, failed: bool) -> None:
        now = self._clock()
        self._window.append((now, failed))
        while self._window and self._window[0][0] < now - self._settings.window_s:
            self._window.popleft()


class Breakers:
    """All breakers of one router replica, created on first use."""

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, str, State], None] = lambda *_: None):
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def breaker(self, provider: str, model: str) -> CircuitBreaker:
        key = (provider, model)
        if key not in self._breakers:
            self._breakers[key] = CircuitBreaker(
                self._settings, self._clock, lambda state: self._on_change(provider, model, state))
        return self._breakers[key]

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {f"{p}/{m}": b.snapshot() for (p, m), b in sorted(self._breakers.items())}

    def reset(self) -> None:
        for provider, model in self._breakers:
            self._on_change(provider, model, "closed")
        self._breakers.clear()
