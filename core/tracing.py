"""OpenTelemetry traces of a request across the Router, the model replicas and the Embedder, exported
over OTLP/HTTP (config `tracing`, core/config.py; the standard OTEL_* variables, core/env.py).

Each process (a Router, LLMServer or Embedder replica) starts its own tracer provider and never sets
the global one, which Ray Serve's own tracing (RAY_SERVE_TRACING_*) may hold. A span crosses a Serve
handle call as a W3C trace-context carrier on the request (`GenerationParams.trace`,
`EmbedRequest.trace`); a replica traces only requests that arrive with one, so the Router's sampling
decides for the whole trace. Off (the default), no span is made and the SDK is not imported.

Attribute names follow the OpenTelemetry GenAI semantic conventions (development status), with the
service's own under `learnx.`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from core.generation import Delta
from core.tracing_config import TracingConfig

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

Span = trace.Span
Carrier = dict[str, str]  # traceparent (and tracestate): what crosses a process boundary
PROPAGATOR = TraceContextTextMapPropagator()

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"  # seconds, from the request's issue
FINISH_REASONS = "gen_ai.response.finish_reasons"
ERROR_TYPE = "error.type"


@dataclass(frozen=True)
class Tracing:
    """One process's tracer, over a provider of its own that exports in batches."""

    tracer: trace.Tracer
    provider: TracerProvider

    def span(self, name: str, kind: SpanKind = SpanKind.INTERNAL, parent: Context | None = None,
             attributes: Mapping[str, Any] | None = None) -> Span:
        """A span started now, a child of `parent` (None: of the current span)."""
        return self.tracer.start_span(name, context=parent, kind=kind, attributes=attributes)

    def child(self, carrier: Mapping[str, str] | None, name: str,
              attributes: Mapping[str, Any]) -> Span | None:
        """A replica's span for a request that came with a trace context; None without one."""
        if not carrier:
            return None
        return self.span(name, SpanKind.SERVER, PROPAGATOR.extract(carrier), attributes)

    def shutdown(self) -> None:
        """Export what is buffered (at most the exporter's timeout) and stop."""
        self.provider.shutdown()


def start_tracing(config: TracingConfig, component: str,
                  environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """This process's tracing, or None when it is off (OTEL_SDK_DISABLED=true turns it off too).
    `component` (router, llm, embedder) is a resource attribute: which deployment made a span."""
    if not config.enabled or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
                              resource=Resource.create({"service.name": config.service_name,
                                                        "learnx.component": component}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint)))
    _log_trace_ids()
    return Tracing(provider.get_tracer("learnx-ai"), provider)


def carrier(span: Span) -> Carrier | None:
    """`span`'s context to send with a request to another process; None when it is not recorded
    (tracing off, or the trace not sampled): the other side then makes no span."""
    if not span.is_recording():
        return None
    found: Carrier = {}
    PROPAGATOR.inject(found, context=trace.set_span_in_context(span))
    return found


def current() -> Span | None:
    """The current span (the request's, router/http/tracing.py) if it records, else None."""
    span = trace.get_current_span()
    return span if span.is_recording() else None


def current_carrier() -> Carrier | None:
    return carrier(trace.get_current_span())


def annotate(span: Span, attributes: Mapping[str, Any]) -> None:
    """Set the attributes that have a value (None ones are left out)."""
    span.set_attributes({k: v for k, v in attributes.items() if v is not None})


@contextlib.contextmanager
def running(span: Span) -> Iterator[Span]:
    """`span` current for the block (a coroutine's: never across an async generator's yields), and
    ended after it; an error fails it."""
    with trace.use_span(span, end_on_exit=True, record_exception=False,
                        set_status_on_exception=False):
        try:
            yield span
        except Exception as error:
            failed(span, error)
            raise


@contextlib.contextmanager
def continued(found: Mapping[str, str] | None) -> Iterator[None]:
    """The context of `found` (a carrier) current for the block, so that an SDK that propagates
    the current trace context itself (Anthropic's) sends this one; never across a yield."""
    if not found:
        yield
        return
    token = otel_context.attach(PROPAGATOR.extract(found))
    try:
        yield
    finally:
        otel_context.detach(token)


def failed(span: Span, error: BaseException) -> None:
    """The span ended in `error`: error.type is its class, the status says why."""
    span.set_attribute(ERROR_TYPE, type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, str(getattr(error, "message", "")) or None))


async def observed(span: Span, deltas: AsyncIterator[Delta], started: float,
                   clock: Callable[[], float]) -> AsyncIterator[Delta]:
    """A replica's generation as its span sees it: time to the first delta, tokens generated, the
    finish reason, and how it ended (an error, or cancelled: the caller went away)."""
    tokens, first = 0, True
    try:
        async for delta in deltas:
            if first:
                span.set_attribute(FIRST_CHUNK, clock() - started)
                first = False
            tokens += delta.tokens or 0
            if delta.finish_reason is not None:
                span.set_attribute(FINISH_REASONS, [delta.finish_reason])
                if delta.usage is not None:
                    span.set_attributes({INPUT_TOKENS: delta.usage.prompt_tokens,
                                         OUTPUT_TOKENS: delta.usage.completion_tokens})
            yield delta
    except (asyncio.CancelledError, GeneratorExit):
        span.set_attribute("learnx.cancelled", True)  # the caller went away: not an error here
        raise
    except BaseException as error:
        failed(span, error)
        raise
    finally:
        span.set_attribute("learnx.generated_tokens", tokens)
        span.end()


class _TraceIds(logging.Filter):
    """Log records made while a span is current carry its ids (Serve's JSON logs show them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


def _log_trace_ids() -> None:
    logger = logging.getLogger("ray.serve")  # the logger of this service and of Serve
    if not any(isinstance(f, _TraceIds) for f in logger.filters):
        logger.addFilter(_TraceIds())
