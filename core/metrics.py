"""Every service metric, in one place, on Ray's metrics system: each node's metrics agent exports them
for Prometheus (as `ray_<name>`, beside Ray Serve's own `ray_serve_*` metrics).

Callers use the small `record_*` functions below with explicit values; the metric objects are created
on first use in the process that records them (a replica), never at import. Tags are bounded sets
(operation, provider, model, outcome, status...), never a user or request id."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Protocol

from ray.util import metrics

from core.generation import EngineLoad

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0]
TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]
BATCH_BUCKETS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
NONE = "none"  # the provider/model tag of a request refused before any provider was chosen
MODEL_TAGS = ("operation", "provider", "model")


@dataclass(frozen=True)
class RequestSample:
    """One finished request, as the usage meter saw it."""

    operation: str  # router/usage/record.py: Operation
    provider: str | None  # the final provider/model; None when refused before routing
    model: str | None
    outcome: str  # success | error | client_disconnected | shared
    status: int
    latency_s: float
    ttft_s: float | None  # time to the first generated token; None when nothing was generated
    input_tokens: int
    output_tokens: int
    cost_usd: float
    savings_usd: float  # local tokens priced at the cheapest hosted model of their tier, minus cost
    fallbacks: int  # moves to another provider/model
    retries: int  # repeated attempts on the same provider/model
    budget_action: str | None  # downgraded | refused
    # Of input_tokens, those read from the provider's prompt cache and those written to it; of
    # output_tokens, the reasoning ones (the provider's own counts, as the ledger keeps them).
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


DETAILS = ("cached_input", "cache_write", "reasoning")  # learnx_token_details_total's kinds


def _counter(name: str, description: str, tags: tuple[str, ...] = ()) -> metrics.Counter:
    return metrics.Counter(name, description=description, tag_keys=tags)


@dataclass(frozen=True)
class _RequestMetrics:
    requests: metrics.Counter
    latency: metrics.Histogram
    ttft: metrics.Histogram
    tokens: metrics.Counter
    details: metrics.Counter
    amounts: dict[str, metrics.Counter]  # RequestSample field -> counter tagged like latency


@cache
def _request_metrics() -> _RequestMetrics:
    return _RequestMetrics(
        requests=_counter("learnx_requests_total", "Requests by operation, final provider/model, "
                          "outcome and HTTP status", (*MODEL_TAGS, "outcome", "status")),
        latency=metrics.Histogram("learnx_request_latency_seconds", description="Whole-request "
                                  "latency", boundaries=LATENCY_BUCKETS, tag_keys=MODEL_TAGS),
        ttft=metrics.Histogram("learnx_time_to_first_token_seconds", description="From admission "
                               "to the first generated token", boundaries=TTFT_BUCKETS,
                               tag_keys=MODEL_TAGS),
        tokens=_counter("learnx_tokens_total", "Tokens billed, by direction (input, output)",
                        (*MODEL_TAGS, "direction")),
        details=_counter("learnx_token_details_total", "Of the tokens billed, those read from the "
                         "provider's prompt cache (cached_input), written to it (cache_write) and "
                         "spent reasoning (reasoning), by kind", (*MODEL_TAGS, "kind")),
        amounts={
            "cost_usd": _counter("learnx_cost_usd_total", "Cost in USD", MODEL_TAGS),
            "savings_usd": _counter("learnx_savings_usd_total", "USD saved by local models against "
                                    "the cheapest hosted model of their tier", MODEL_TAGS),
            "fallbacks": _counter("learnx_fallbacks_total", "Moves to another provider/model, "
                                  "tagged with the one that answered last", MODEL_TAGS),
            "retries": _counter("learnx_retries_total", "Retries on the same provider/model",
                                MODEL_TAGS),
        })


@cache
def _budget_actions() -> metrics.Counter:
    return _counter("learnx_budget_actions_total", "Requests downgraded to a free model or refused "
                    "by a spending budget", ("operation", "action"))


def record_request(sample: RequestSample) -> None:
    m = _request_metrics()
    tags = {"operation": sample.operation, "provider": sample.provider or NONE,
            "model": sample.model or NONE}
    m.requests.inc(tags={**tags, "outcome": sample.outcome, "status": str(sample.status)})
    m.latency.observe(sample.latency_s, tags=tags)
    if sample.ttft_s is not None:
        m.ttft.observe(sample.ttft_s, tags=tags)
    for direction, tokens in (("input", sample.input_tokens), ("output", sample.output_tokens)):
        if tokens:
            m.tokens.inc(tokens, tags={**tags, "direction": direction})
    for kind in DETAILS:
        if count := getattr(sample, f"{kind}_tokens"):
            m.details.inc(count, tags={**tags, "kind": kind})
    for field_name, counter in m.amounts.items():
        value = getattr(sample, field_name)
        if value > 0:
            counter.inc(value, tags=tags)
    if sample.budget_action is not None:
        _budget_actions().inc(tags={"operation": sample.operation, "action": sample.budget_action})


@cache
def _provider_errors() -> metrics.Counter:
    return _counter("learnx_provider_errors_total", "Failed provider calls by upstream HTTP status "
                    "(0: no status, e.g. a timeout)", ("provider", "model", "error_type", "status"))


def record_provider_error(provider: str, model: str, error_type: str, status: int | None) -> None:
    _provider_errors().inc(tags={"provider": provider, "model": model, "error_type": error_type,
                                 "status": str(status or 0)})


@cache
def _rate_limited() -> metrics.Counter:
    return _counter("learnx_rate_limited_total", "Requests refused with 429 by a rate limit",
                    ("scope", "kind"))


def record_rate_limited(scope: str, kind: str) -> None:
    """scope: user | key; kind: requests | tokens."""
    _rate_limited().inc(tags={"scope": scope, "kind": kind})


@cache
def _embedding_metrics() -> tuple[metrics.Counter, metrics.Histogram]:
    return (_counter("learnx_embedding_cache_total", "Embedding cache lookups by result (hit, miss)",
                     ("model", "result")),
            metrics.Histogram("learnx_embedding_batch_size", description="Texts per local encoder "
                              "batch (@serve.batch)", boundaries=BATCH_BUCKETS))


def record_embedding_cache(model: str, hits: int, misses: int) -> None:
    counter = _embedding_metrics()[0]
    for result, count in (("hit", hits), ("miss", misses)):
        if count:
            counter.inc(count, tags={"model": model, "result": result})


def record_batch_size(size: int) -> None:
    _embedding_metrics()[1].observe(size)


@cache
def _generations() -> metrics.Counter:
    return _counter("learnx_llm_generations_total", "Generations of a local model replica, by how "
                    "they ended: finished, cancelled (the caller left), rejected (the request's "
                    "fault), busy (no slot soon enough), failed", ("model", "replica", "outcome"))


def record_generation(model: str, replica: str, outcome: str) -> None:
    _generations().inc(tags={"model": model, "replica": replica, "outcome": outcome})


@cache
def _engine_gauges() -> dict[str, metrics.Gauge]:
    tags = ("model", "replica")
    return {
        "queued": metrics.Gauge("learnx_llm_queue_depth", description="Requests waiting for a "
                                "slot of a local model replica", tag_keys=tags),
        "busy": metrics.Gauge("learnx_llm_slots_busy", description="Slots of a local model "
                              "replica generating now", tag_keys=tags),
        "slots": metrics.Gauge("learnx_llm_slots", description="Slots of a local model replica "
                               "(requests it generates at once)", tag_keys=tags),
        "estimated_wait_s": metrics.Gauge("learnx_llm_estimated_wait_seconds", description="How "
                                          "long a request arriving now is expected to wait for a "
                                          "slot", tag_keys=tags),
    }


def record_engine_load(model: str, replica: str, load: EngineLoad) -> None:
    tags = {"model": model, "replica": replica}
    for field, gauge in _engine_gauges().items():  # the gauges, not the running totals
        gauge.set(float(getattr(load, field)), tags=tags)


@cache
def _breaker_metrics() -> tuple[metrics.Gauge, metrics.Counter]:
    return (metrics.Gauge("learnx_circuit_breaker_state", description="Circuit breaker state per "
                          "provider/model: 0 closed, 1 half-open, 2 open",
                          tag_keys=("provider", "model")),
            _counter("learnx_circuit_breaker_opened_total", "Times a provider/model's circuit "
                     "breaker opened", ("provider", "model")))


def breaker_changed(provider: str, model: str, state: str) -> None:
    tags = {"provider": provider, "model": model}
    gauge, opened = _breaker_metrics()
    gauge.set(BREAKER_STATES[state], tags=tags)
    if state == "open":
        opened.inc(tags=tags)


class Counter(Protocol):
    def inc(self, value: float = 1.0) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


@dataclass(frozen=True)
class LedgerMetrics:
    """What the usage ledger reports; tests pass their own to read it."""

    dropped: Counter
    write_failures: Counter
    dead_lettered: Counter
    buffered: Gauge


@cache
def ledger_metrics() -> LedgerMetrics:
    return LedgerMetrics(
        dropped=_counter("learnx_ledger_dropped_total",
                         "Usage records dropped because the buffer was full"),
        write_failures=_counter("learnx_ledger_write_failures_total",
                                "Failed batch writes to the usage ledger (retried)"),
        dead_lettered=_counter("learnx_ledger_dead_lettered_total",
                               "Usage records the database refused, kept in usage_dead_letters"),
        buffered=metrics.Gauge("learnx_ledger_buffered_records",
                               description="Usage records waiting to be written"))
