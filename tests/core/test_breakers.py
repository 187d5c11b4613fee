"""Circuit breakers with an injected clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.breakers import Breakers, BreakerSettings, CircuitBreaker, counts
from core.errors import InvalidRequest, ProviderError, ProviderTimeout
from tests.fakes.clock import Clock


def breaker(**settings) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(BreakerSettings(**{"failure_threshold": 3, "cooldown_s": 10, **settings}),
                          clock), clock


def test_opens_after_consecutive_failures_and_rejects_fast() -> None:
    b, _ = breaker()
    for _ in range(2):
        b.record_failure()
    assert b.state == "closed" and b.allow()
    b.record_failure()
    assert b.state == "open"
    assert not b.allow()
    assert b.retry_after() == 10


def test_success_resets_the_consecutive_count() -> None:
    b, _ = breaker()
    b.record_failure(), b.record_failure(), b.record_success(), b.record_failure()
    assert b.state == "closed"


def test_half_opens_after_cooldown_and_lets_one_probe_through() -> None:
    b, clock = breaker()
    for _ in range(3):
        b.record_failure()
    clock.now += 10
    assert b.allow()
    assert b.state == "half_open"
    assert not b.allow()  # only one probe at a time


def test_successful_probe_closes() -> None:
    b, clock = breaker()
    for _ in range(3):
        b.record_failure()
    clock.now += 10
    b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow()


def test_failed_probe_reopens_with_a_longer_cooldown() -> None:
    b, clock = breaker(cooldown_multiplier=3, max_cooldown_s=50)
    for _ in range(3):
        b.record_failure()
    clock.now += 10
    b.allow()
    b.record_failure()
    assert b.state == "open"
    assert b.retry_after() == 30
    clock.now += 30
    b.allow()
    b.record_failure()
    assert b.retry_after() == 50  # capped


def test_failure_rate_over_the_window() -> None:
    b, clock = breaker(failure_threshold=100, failure_rate=0.5, min_requests=4, window_s=60)
    for failed in (True, False, False, True):
        b.record_failure() if failed else b.record_success()
        clock.now += 1
    assert b.state == "open"


def test_old_results_leave_the_window() -> None:
    b, clock = breaker(failure_threshold=100, failure_rate=0.5, min_requests=4, window_s=10)
    b.record_failure(), b.record_failure()
    clock.now += 30
    b.record_success(), b.record_success(), b.record_failure()
    assert b.state == "closed"


def test_auth_failure_opens_at_once() -> None:
    b, _ = breaker()
    b.record_failure(counts(ProviderError("401", provider="p", model="m", upstream_status=401)))
    assert b.state == "open"


def test_what_counts() -> None:
    assert counts(InvalidRequest("bad")) == "ignore"
    assert counts(ProviderError("x", provider="p", model="m", upstream_status=503)) == "failure"
    assert counts(ProviderError("x", provider="p", model="m", upstream_status=429)) == "failure"
    assert counts(ProviderTimeout("t", provider="p", model="m")) == "failure"
    assert counts(ProviderError("x", provider="p", model="m", upstream_status=403)) == "fatal"


def test_health_reports_state_changes_and_snapshots() -> None:
    changes: list[tuple[str, str, str]] = []
    health = Breakers(BreakerSettings(failure_threshold=1), Clock(),
                    on_change=lambda *c: changes.append(c))
    health.breaker("openai", "gpt-4o-mini").record_failure()
    assert changes == [("openai", "gpt-4o-mini", "open")]
    assert health.snapshot()["openai/gpt-4o-mini"]["state"] == "open"
    health.reset()
    assert health.snapshot() == {}


def test_a_probe_that_never_reports_expires() -> None:
    b, clock = breaker(probe_timeout_s=30)
    for _ in range(3):
        b.record_failure()
    clock.now += 10
    assert b.allow()  # the probe's caller vanishes without a word
    clock.now += 29
    assert not b.allow()
    clock.now += 1
    assert b.allow()  # its slot is free again
    b.record_success()
    assert b.state == "closed"


def test_a_released_probe_lets_the_next_one_through_at_once() -> None:
    b, clock = breaker()
    for _ in range(3):
        b.record_failure()
    clock.now += 10
    assert b.allow()
    b.release()  # cancelled, or skipped after all
    assert b.state == "half_open"
    assert b.allow()


def test_release_without_a_probe_changes_nothing() -> None:
    b, _ = breaker()
    b.release()
    assert b.state == "closed" and b.allow()


def test_available_takes_no_probe() -> None:
    b, clock = breaker()
    for _ in range(3):
        b.record_failure()
    assert not b.available()
    clock.now += 10
    assert b.available() and b.available()
    assert b.allow()
    assert not b.available()


def test_reset_closes_and_forgets() -> None:
    b, _ = breaker()
    for _ in range(3):
        b.record_failure()
    b.reset()
    assert b.snapshot() == {"state": "closed", "consecutive_failures": 0, "trips": 0,
                            "retry_after_s": 0.0, "probes_in_flight": 0}


OPERATIONS = st.lists(st.one_of(
    st.sampled_from(["success", "failure", "fatal", "ignored", "cancelled", "abandoned"]),
    st.floats(min_value=0, max_value=400)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_a_breaker_always_closes_again_once_the_upstream_is_healthy(operations) -> None:
    """Whatever happened before (failures, cancelled and abandoned probes, time passing), once the
    upstream answers again, one call after the longest cooldown and probe timeout closes it."""
    b, clock = breaker(cooldown_s=5, max_cooldown_s=300, probe_timeout_s=60)
    for op in operations:
        if isinstance(op, float):
            clock.now += op
        elif b.allow():
            if op in ("failure", "fatal", "ignored"):
                b.record_failure({"ignored": "ignore"}.get(op, op))  # type: ignore[arg-type]
            elif op == "success":
                b.record_success()
            elif op == "cancelled":
                b.release()
    clock.now += 300
    if b.allow():
        b.record_success()
    assert b.state == "closed"
