"""The one SSE encoder (and the decoder of upstream SSE bodies). Every stream the service sends goes
through `encode_stream`, which guarantees an explicit terminal event: the stream's own end, or an
error event, then `data: [DONE]`. A stream of a run (router/services/runs.py) numbers its events:
`id: run_<hex>:<n>`, n from 1, `[DONE]` included, which is what a reconnect's Last-Event-ID names."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

from pydantic import BaseModel

from core.errors import InvalidRequest, ServiceError

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
MEDIA_TYPE = "text/event-stream"
_EVENT_END = re.compile(rb"\r?\n\r?\n")  # a blank line ends an event
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: don't buffer
T = TypeVar("T")
RUN_HEADER = "X-LearnX-Run-Id"  # names a stream's run, for clients that cannot read event ids
_EVENT_ID = re.compile(r"(run_[0-9a-f]{32}):([0-9]{1,9})")


def parse_event_id(value: str) -> tuple[str, int]:
    """(run, sequence) of a Last-Event-ID, or a 400 saying what an id looks like."""
    found = _EVENT_ID.fullmatch(value.strip())
    if found is None:
        raise InvalidRequest("Last-Event-ID must be the id of an event of this service's stream "
                             "(run_<32 hex digits>:<number>), as the stream sent it",
                             param="Last-Event-ID")
    return found.group(1), int(found.group(2))


def encode(data: BaseModel | dict[str, Any], event: str | None = None) -> bytes:
    payload = data.model_dump_json() if isinstance(data, BaseModel) \
        else json.dumps(data, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


Failure = Callable[[ServiceError], list[dict[str, Any]]]
_failures: ContextVar[list[ServiceError] | None] = ContextVar("stream_failures", default=None)


@contextlib.contextmanager
def stream_failures() -> Iterator[list[ServiceError]]:
    """Collects the errors that end the streams encoded within the block (in this context and the
    tasks it starts, as Starlette streams a response): a 200 whose stream ended with an error
    event is not a success (the Idempotency middleware keeps no such response)."""
    failures: list[ServiceError] = []
    token = _failures.set(failures)
    try:
        yield failures
    finally:
        _failures.reset(token)


def _failed(error: ServiceError) -> list[ServiceError]:
    failures = _failures.get()
    if failures is not None:
        failures.append(error)
    return [error]


def error_event(error: ServiceError) -> list[dict[str, Any]]:
    """A failed stream's end by default: one event, the error in the one error shape."""
    return [error.body()]


async def encode_stream(events: AsyncIterator[BaseModel | dict[str, Any]], *, named: bool = False,
                        failure: Failure = error_event, done: bool = True,
                        run: str | None = None) -> AsyncIterator[bytes]:
    """Frame `events` as SSE. An error raised mid-stream becomes `failure`'s events (by default
    one error event); the stream ends with `data: [DONE]` unless `done` is False (OpenAI's
    Responses streams end with their own terminal event instead). `named`: each event is a dict
    whose `type` is also its SSE event name, as OpenAI's Responses streams send them. `run`: each
    event has the id `run:n`, n counting from 1."""
    frame = _Framer(named, run)
    try:
        async for event in events:
            yield frame(event)
    except ServiceError as error:
        for event in failure(*_failed(error)):
            yield frame(event)
    except Exception:  # a bug must still end the stream visibly, not cut it
        log.exception("stream failed")
        for event in failure(*_failed(ServiceError("internal error while streaming"))):
            yield frame(event)
    if done:
        yield frame(None)


async def peek(events: AsyncIterator[T]) -> tuple[T, AsyncIterator[T]]:
    """The stream's first event, waited for (what fails before it raises here, to be answered as
    an HTTP error rather than an event in a 200), and the whole stream, that event included."""
    first = await anext(events)
    return first, _prepended(first, events)


async def _prepended(first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    yield first
    async for event in rest:
        yield event


class _Framer:
    def __init__(self, named: bool, run: str | None):
        self.named = named
        self.run = run
        self.seq = 0

    def __call__(self, event: BaseModel | dict[str, Any] | None) -> bytes:
        """An event's frame; None: the final `[DONE]`."""
        if event is None:
            framed = DONE
        else:
            framed = encode(event, event["type"] if self.named and isinstance(event, dict) else None)
        if self.run is None:
            return framed
        self.seq += 1
        return f"id: {self.run}:{self.seq}\n".encode() + framed


async def decode_json(chunks: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    """The JSON of each `data:` event of an upstream SSE body, until `data: [DONE]`. The bytes are
    split into events here and each payload is parsed once, nothing more (the router reads a few
    fields of each)."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *events, pending = _EVENT_END.split(pending)
        for event in events:
            data = b"\n".join(line[5:].lstrip(b" ") for line in event.splitlines()
                              if line.startswith(b"data:"))
            if data == b"[DONE]":
                return
            if data:
                yield json.loads(data)
