"""What a generation service gives the HTTP layer: the one small Protocol every generation route's
service implements (`Generating`), and its two kinds of answer, a stream of wire events
(`Streamed`) or a whole JSON body (`Answered`). router/http/generated.py turns either into an HTTP
response and owns the request's meter from its start to its one close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from router.usage.meter import Meter
from router.wire.sse import Failure, error_event

Body = TypeVar("Body", contravariant=True)


@dataclass(frozen=True)
class Streamed:
    """Wire events to send as SSE (router/wire/sse.py: encode_stream frames them and ends them with
    a terminal event whatever happens)."""

    events: AsyncIterator[BaseModel | dict[str, Any]]
    route: str | None = None  # provider/model of the first attempt: the x-learnx-route header
    named: bool = False  # each event a dict whose `type` is its SSE event name (Responses)
    failure: Failure = field(default=error_event)  # the events that end a stream that failed
    done: bool = True  # end with `data: [DONE]` (Responses streams end with their own event)


@dataclass(frozen=True)
class Answered:
    """A whole answer as JSON."""

    body: dict[str, Any]
    route: str | None = None  # the x-learnx-route header
    status: int = 200


Reply = Streamed | Answered


class Generating(Protocol[Body]):
    """A generation route's service. Each method runs the request under `meter` (which it reserves
    with and tracks its runs on, but never closes: the caller does). `stream` waits for the first
    delta, so that anything failing before the first token (bad input, every provider down) raises
    and is an HTTP error rather than an event in a 200; it may still answer as a whole (a
    generate-content error event)."""

    async def stream(self, request: Body, meter: Meter) -> Reply: ...

    async def complete(self, request: Body, meter: Meter) -> Answered: ...
