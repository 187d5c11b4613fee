"""Service metrics on Ray's metrics system (exported by each node's metrics agent for Prometheus,
beside Ray Serve's own request metrics)."""

from __future__ import annotations

from functools import cache

from ray.util import metrics

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


@cache
def _breaker_gauge() -> metrics.Gauge:
    return metrics.Gauge("learnx_circuit_breaker_state",
                         description="Circuit breaker state per provider/model: 0 closed, "
                                     "1 half-open, 2 open",
                         tag_keys=("provider", "model"))


@cache
def _breaker_trips() -> metrics.Counter:
    return metrics.Counter("learnx_circuit_breaker_opened_total",
                           description="Times a provider/model's circuit breaker opened",
                           tag_keys=("provider", "model"))


def breaker_changed(provider: str, model: str, state: str) -> None:
    tags = {"provider": provider, "model": model}
    _breaker_gauge().set(BREAKER_STATES[state], tags=tags)
    if state == "open":
        _breaker_trips().inc(tags=tags)
