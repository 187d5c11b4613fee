"""The one way a generation route answers: `generated()` opens the request's meter, asks the service
(router/services/generation.py: `Generating`) for a stream or a whole answer, and closes the meter
exactly once however the request ends: answered, refused, failed, cancelled, or the client gone
before or while the stream is sent. A route only names its service and its operation; it never
touches the meter, so it cannot lose the request's ledger record. `metered()` is the same life for
a route that is not a generation (embeddings)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from router.http.runs import run_stream
from router.services.generation import Generating, Streamed
from router.services.wiring import Services
from router.usage.meter import Meter
from router.usage.record import Operation
from router.wire import sse
from router.wire.generation import GenerationRequest
from router.wire.rules import header_id

Body = TypeVar("Body", bound=GenerationRequest)
ROUTE_HEADER = "x-learnx-route"  # provider/model of the first attempt


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def request_id(request: Request) -> str | None:
    """The caller's X-Request-Id, or the one the Serve ingress gave it (HAProxy adds it to requests
    and Serve returns it on the response); a 400 if it holds anything but visible ASCII."""
    return header_id("X-Request-Id", request.headers.get("x-request-id"))


async def start_meter(request: Request, user: str | None, operation: Operation,
                      **details: Any) -> Meter:
    """The request's meter, once its key's limits admit it (a refusal is recorded and raised)."""
    return await services(request).accounting.start(
        request.state.api_key, user, operation, request_id(request),
        idempotency_key=header_id("Idempotency-Key", request.headers.get("idempotency-key")),
        **details)


async def generated(request: Request, service: Generating[Body], body: Body,
                    operation: Operation, **details: Any) -> Response:
    """`body` served by `service`: streamed as SSE when it asks to be, else one JSON answer."""
    meter = await start_meter(request, body.end_user(), operation, streamed=body.streamed(),
                              tier=body.tier, group=body.end_group(), **details)
    with meter.closed_on_error():
        reply = await (service.stream(body, meter) if body.streamed()
                       else service.complete(body, meter))
    if isinstance(reply, Streamed):
        runs = services(request).runs
        if runs is not None:  # a stream that outlives its connection (router/http/runs.py)
            return await run_stream(request, runs, meter, reply, _route(reply.route))
        return MeteredStream(meter, reply)
    meter.close()
    return JSONResponse(reply.body, status_code=reply.status, headers=_route(reply.route))


@contextlib.asynccontextmanager
async def metered(request: Request, user: str | None, operation: Operation,
                  **details: Any) -> AsyncIterator[Meter]:
    """A meter for the block: closed with its error if it raises, else when it ends."""
    meter = await start_meter(request, user, operation, **details)
    with meter.closed_on_error():
        yield meter
    meter.close()


class MeteredStream(StreamingResponse):
    """A reply's events as SSE. The stream closes the meter as it ends (its last event, an error,
    the client gone mid-way); should the response end before the stream did (the client gone
    before its first byte), the meter is closed here, as a disconnection."""

    def __init__(self, meter: Meter, reply: Streamed):
        self.meter = meter
        self.watched = meter.watch(reply.events)
        super().__init__(
            sse.encode_stream(self.watched, named=reply.named, failure=reply.failure,
                              done=reply.done),
            media_type=sse.MEDIA_TYPE, headers={**sse.HEADERS, **_route(reply.route)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Starlette leaves a body it stopped reading to the garbage collector: close it now
            # (a no-op once it ended), then the meter in case the body was never started.
            with contextlib.suppress(RuntimeError):  # still running in a task being torn down
                await self.watched.aclose()
            self.meter.close(asyncio.CancelledError())


def _route(route: str | None) -> dict[str, str]:
    return {ROUTE_HEADER: route} if route else {}
