"""The request's server span (router/http/api.py installs it outermost, and only with tracing on):
a child of the caller's `traceparent` when it sends one (W3C trace context: the Node backend, nginx),
current while the request runs so that the run's attempt spans (router/run/spans.py) and the
Embedder's go below it, and ended when the response's last byte is sent (a stream's too). The
meter adds the request's totals to it as it closes (router/usage/meter.py)."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.tracing import PROPAGATOR, Tracing, failed


class Traced:
    def __init__(self, app: ASGIApp, tracing: Tracing):
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"traceparent", b"tracestate", b"x-request-id")}
        method, path = scope["method"], scope["path"]
        span = self.tracing.span(f"{method} {path}", SpanKind.SERVER, PROPAGATOR.extract(headers),
                                 {"http.request.method": method, "url.path": path})
        if "x-request-id" in headers:
            span.set_attribute("learnx.request_id", headers["x-request-id"])

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, sent)
        except BaseException as error:
            failed(span, error)
            raise
        finally:
            otel_context.detach(token)
            route = getattr(scope.get("route"), "path", None)
            if route is not None:  # the route's template, once routing found one
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            span.end()
