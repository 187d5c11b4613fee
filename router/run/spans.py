"""A request's journey as spans, under the request's server span (router/http/tracing.py): each
attempt of a run (router/run/fallback.py) is a GenAI client span, `{operation} {model}`, whose
context goes with the call (GenerationParams.trace) so that a local model's replica adds its span
below it (a hosted provider sends it on as `traceparent`, for a gateway that traces); the request's
own span gets the request's totals when its meter closes. With tracing off, a run's spans are
`NO_SPANS`: nothing is made."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, Protocol

from opentelemetry.trace import SpanKind

from core import tracing
from core.generation import GenerationParams
from core.metrics import RequestSample
from core.tracing import Span, Tracing
from router.run.attempts import Attempt

# The service's operations (router/usage/record.py) as the GenAI conventions name them.
OPERATIONS = {"chat.completions": "chat", "responses": "chat", "generate-content": "chat",
              "completions": "text_completion", "embeddings": "embeddings"}


class AttemptSpan(Protocol):
    def traced(self, params: GenerationParams) -> GenerationParams:
        """`params` carrying this attempt's trace context (unchanged when not traced)."""
        ...

    def end(self, attempt: Attempt) -> None:
        """End the span (once: a later call does nothing) with what the attempt came to."""
        ...


class Spans(Protocol):
    def attempt(self, attempt: Attempt, params: GenerationParams) -> AttemptSpan:
        """The span of `attempt`, started now, sending `params`."""
        ...


class _Untraced:
    def traced(self, params: GenerationParams) -> GenerationParams:
        return params

    def end(self, attempt: Attempt) -> None:
        return None


class _Traced:
    def __init__(self, span: Span):
        self.span = span
        self.started = time.perf_counter()
        self.ended = False

    def traced(self, params: GenerationParams) -> GenerationParams:
        return dataclasses.replace(params, trace=tracing.carrier(self.span))

    def end(self, attempt: Attempt) -> None:
        if self.ended:
            return
        self.ended = True
        span, usage = self.span, attempt.billed()
        span.set_attributes({tracing.INPUT_TOKENS: usage.prompt_tokens,
                             tracing.OUTPUT_TOKENS: usage.completion_tokens,
                             "learnx.usage.estimated": attempt.usage is None})
        if attempt.first_token_at is not None:
            span.set_attribute(tracing.FIRST_CHUNK, attempt.first_token_at - self.started)
        if attempt.finished:
            span.set_attribute(tracing.RESPONSE_MODEL, attempt.route.model)
        elif attempt.error is not None:
            tracing.failed(span, attempt.error)
        else:  # the router stopped it: the client went away, or the stream reached its cap
            span.set_attribute("learnx.stopped", True)
        span.end()


class RunSpans:
    """The spans of one request's runs."""

    def __init__(self, found: Tracing):
        self._tracing = found

    def attempt(self, attempt: Attempt, params: GenerationParams) -> AttemptSpan:
        operation = "chat" if params.prompt is None else "text_completion"
        route = attempt.route
        return _Traced(self._tracing.span(f"{operation} {route.model}", SpanKind.CLIENT, attributes={
            tracing.OPERATION: operation, tracing.PROVIDER: route.provider.name,
            tracing.REQUEST_MODEL: route.model, "gen_ai.request.max_tokens": params.max_tokens,
            "gen_ai.request.temperature": params.temperature, "gen_ai.request.top_p": params.top_p,
            "learnx.route.reason": route.candidate.reason}))


class _NoSpans:
    def attempt(self, attempt: Attempt, params: GenerationParams) -> AttemptSpan:
        return UNTRACED


UNTRACED = _Untraced()
NO_SPANS = _NoSpans()


def requested(model: str) -> None:
    """The model the caller asked for (a name, an alias or a tier) on the request's span."""
    span = tracing.current()
    if span is not None:
        span.set_attribute(tracing.REQUEST_MODEL, model)


def finished(sample: RequestSample, details: Mapping[str, Any]) -> None:
    """The request's totals on its span, as the meter recorded them; `details`: the caller's ids."""
    span = tracing.current()
    if span is None:
        return
    tracing.annotate(span, {
        tracing.OPERATION: OPERATIONS.get(sample.operation, sample.operation),
        "learnx.operation": sample.operation, tracing.PROVIDER: sample.provider,
        tracing.RESPONSE_MODEL: sample.model, tracing.INPUT_TOKENS: sample.input_tokens,
        tracing.OUTPUT_TOKENS: sample.output_tokens, tracing.FIRST_CHUNK: sample.ttft_s,
        "learnx.outcome": sample.outcome, "learnx.cost_usd": sample.cost_usd,
        "learnx.fallbacks": sample.fallbacks, "learnx.retries": sample.retries, **details})
