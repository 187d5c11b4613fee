"""Streams that survive a dropped connection, at the HTTP edge (router/services/runs.py keeps the
runs).

- A streamed generation is answered from a run (`run_stream`, which router/http/generated.py
  calls): its frames each carry an SSE id `run_<hex>:<n>`, and `X-LearnX-Run-Id` names the run.
- A reconnect is the same request sent again with `Last-Event-ID` (what an SSE client sends): the
  `Resume` middleware answers it from the run, the frames after that id and then the live ones to
  the run's end, on whichever replica it lands (Redis configured). It never starts a generation:
  an unknown run is a 404, events no longer kept a 410, a stopped run a 409, a run of another key a
  404, another route or body a 422.
- `GET /v1/runs/{id}/events?after=n` resumes without the header (clients that cannot set it);
  `POST /v1/runs/{id}/cancel` stops a run: its stream ends with a `run_stopped` error event and it
  stays stopped (router/http/routes.py)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from core.config import ApiKeyConfig
from core.errors import RunNotFound, ServiceError, error_response
from router.http.idempotency import read_body
from router.services.generation import Streamed
from router.services.runs import Owner, Resumed, Run, Runs, fingerprint
from router.usage.meter import Meter
from router.wire import sse

# The streaming routes, whose reconnects the middleware answers.
RESUMABLE = ("/v1/chat/completions", "/v1/completions", "/v1/responses",
             "/api/v1/ai/generate-content")


def owner(key: ApiKeyConfig) -> Owner:
    return Owner(key.id, key.tenant_id)


def runs_of(request: Request) -> Runs | None:
    runs: Runs | None = request.app.state.services.runs
    return runs


class RunStream(StreamingResponse):
    """A run's frames to one follower; when the response ends, sent or not (the client gone
    before its first byte), the follower is counted out (the run's grace period may start)."""

    def __init__(self, frames: AsyncIterator[bytes], headers: dict[str, str],
                 leave: Callable[[], None]):
        self.frames = frames
        self.leave = leave
        super().__init__(frames, media_type=sse.MEDIA_TYPE, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with contextlib.suppress(RuntimeError):  # still running in a task being torn down
                await self.frames.aclose()  # type: ignore[attr-defined]
            self.leave()

    @classmethod
    def resumed(cls, resumed: Resumed) -> "RunStream":
        return cls(resumed.frames, resumed.headers, resumed.leave)


async def run_stream(request: Request, runs: Runs, meter: Meter, reply: Streamed,
                     headers: dict[str, str]) -> RunStream:
    """`reply` as SSE from a new run, which closes the meter as the stream ends (its last event,
    an error, a stop, or the grace period run out with no follower)."""
    def frames(run: Run) -> AsyncIterator[bytes]:
        return sse.encode_stream(meter.watch(run.stoppable(reply.events)), named=reply.named,
                                 failure=reply.failure, done=reply.done, run=run.id)
    route = request.scope["route"].path
    run = runs.start(owner(request.state.api_key), fingerprint(route, await request.body()),
                     {**sse.HEADERS, **headers}, meter, frames)
    return RunStream(run.follow(0), run.headers, run.detach)


class Resume:
    """Pure ASGI middleware, inside auth and the body limit and outside Idempotency (a reconnect is
    not a repeat of the request: it follows the same run)."""

    def __init__(self, app: ASGIApp, runs: Runs | None):
        self.app = app
        self.runs = runs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = dict(scope.get("headers", [])).get(b"last-event-id") \
            if scope["type"] == "http" and scope["method"] == "POST" else None
        route = _resumable(scope["path"]) if raw is not None else None
        if raw is None or route is None:
            await self.app(scope, receive, send)
            return
        try:
            run_id, after = sse.parse_event_id(raw.decode("latin-1"))
            body = await read_body(receive)
            if body is None:
                return  # refused by the body limit (its 413 is sent) or the client left
            if self.runs is None:
                raise RunNotFound(run_id)
            resumed = await self.runs.resume(owner(scope["state"]["api_key"]), run_id,
                                             fingerprint(route, body), after)
        except ServiceError as error:
            await error_response(error)(scope, receive, send)
            return
        await RunStream.resumed(resumed)(scope, receive, send)


def _resumable(path: str) -> str | None:
    """The streaming route `path` is (under any prefix Serve mounts the app at), if any."""
    return next((route for route in RESUMABLE if path.endswith(route)), None)
