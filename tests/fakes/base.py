"""What the fakes share: a script of behaviours consumed one per request, the record of requests,
and a uvicorn server on a free loopback port in a background thread.

Tests in other processes (the Node client's) script a fake over HTTP: POST /_fake/script with
`{"behaviours": [{"fault": {"status": 503}}, {"reply": {"text": "..."}}]}` enqueues, GET reads how
many behaviours are pending, how many requests arrived and the fake's invoice (its own token counts
per request, tests/fakes/caching.py), DELETE resets."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.caching import InvoiceLine


@dataclass(frozen=True)
class Call:
    """A tool call in a scripted answer; `arguments` is JSON text."""

    name: str
    arguments: str = "{}"
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


@dataclass(frozen=True)
class Reply:
    """A normal answer: text, tool calls, or both (with calls, the finish reason is the
    provider's for tool calls unless `finish_reason` says otherwise). Token counts default to
    word counts of the prompt and of `text` and the calls' arguments."""

    text: str = "Hello from the fake provider, happy to help you learn today."
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None  # "stop", or "tool_calls" with calls
    chunk_delay_s: float = 0.0
    usage: bool = True  # False: the body leaves usage out (some gateways do)
    reasoning_tokens: int = 0  # generated before the answer, counted in its completion tokens
    tool_calls: tuple[Call, ...] = ()

    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")

    def output_words(self) -> int:
        return words(self.text) + sum(words(c.arguments.replace(",", " ")) for c in self.tool_calls)


@dataclass(frozen=True)
class Fault:
    """A failure, applied per request."""

    status: int | None = None  # answer with this HTTP status and the provider's error body
    retry_after: float | None = None  # Retry-After header with `status`
    delay_s: float = 0.0  # wait before the response head (then behave normally)
    cut_after: int | None = None  # stream: close after N text chunks, without the proper end
    idle_after: int | None = None  # stream: go silent after N text chunks
    malformed: bool = False  # a body / SSE data line that is not JSON


Behaviour = Reply | Fault


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeProvider:
    """Subclasses add the provider's routes; tests enqueue behaviours and read `requests`."""

    script: deque[Behaviour] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    invoice: list[InvoiceLine] = field(default_factory=list)  # what the fake bills, per request
    url: str = ""
    fail_rate: float = 0.0  # share of unscripted requests answered with HTTP 503 (benchmarks)
    _rng: random.Random = field(default_factory=lambda: random.Random(7))
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def enqueue(self, *behaviours: Behaviour) -> None:
        self.script.extend(behaviours)

    def reset(self) -> None:
        """Forget the script, the requests, the invoice and the prompt cache."""
        self.script.clear()
        self.requests.clear()
        self.invoice.clear()
        self.forget_cache()

    def forget_cache(self) -> None:
        """Subclasses with a prompt cache empty it."""

    def next_behaviour(self) -> Behaviour:
        if self.script:
            return self.script.popleft()
        return Fault(status=503) if self._rng.random() < self.fail_rate else Reply()

    def routes(self) -> list[Any]:
        raise NotImplementedError

    async def control(self, request: Request) -> Response:
        if request.method == "POST":
            for item in (await request.json())["behaviours"]:
                kind, fields = next(iter(item.items()))
                if kind == "reply":
                    calls = tuple(Call(**c) for c in fields.pop("tool_calls", []))
                    self.enqueue(Reply(**fields, tool_calls=calls))
                else:
                    self.enqueue(Fault(**fields))
        elif request.method == "DELETE":
            self.reset()
        return JSONResponse({"pending": len(self.script), "requests": len(self.requests),
                             "invoice": [asdict(line) for line in self.invoice]})

    async def record(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append(Recorded(request.url.path, dict(request.headers), body))
        return body

    def start(self) -> FakeProvider:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        routes = [*self.routes(), Route("/_fake/script", self.control, methods=["GET", "POST", "DELETE"])]
        config = uvicorn.Config(Starlette(routes=routes), host="127.0.0.1", port=port,
                                log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)


def words(text: str) -> int:
    return len(text.split())


def pieces(text: str) -> list[str]:
    """Split text into stream chunks at word boundaries, keeping the spaces."""
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def json_pieces(text: str, size: int = 6) -> list[str]:
    """Split JSON text into stream chunks of a few characters, as providers stream arguments."""
    return [text[i:i + size] for i in range(0, len(text), size)]


async def respond(fault: Fault | None, error_body: Callable[[int], dict[str, Any]],
                  make: Callable[[], Response]) -> Response:
    """Apply the head-of-response faults (delay, status, malformed), else `make()`."""
    if fault is not None and fault.delay_s:
        await asyncio.sleep(fault.delay_s)
    if fault is not None and fault.status is not None:
        headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        return JSONResponse(error_body(fault.status), status_code=fault.status, headers=headers)
    if fault is not None and fault.malformed and fault.cut_after is None:
        return Response(b'{"this is": not json', media_type="application/json")
    return make()


async def sse(events: list[bytes], fault: Fault | None, text_events: int,
              delay_s: float) -> AsyncIterator[bytes]:
    """Send SSE frames; `text_events` is how many leading frames precede the text chunks."""
    for index, frame in enumerate(events):
        chunk_number = index - text_events
        if fault is not None and chunk_number >= 0:
            if fault.cut_after is not None and chunk_number >= fault.cut_after:
                if fault.malformed:
                    yield b"data: {not json\n\n"
                return
            if fault.idle_after is not None and chunk_number >= fault.idle_after:
                await asyncio.sleep(3600)
        if delay_s and chunk_number >= 0:
            await asyncio.sleep(delay_s)
        yield frame


def streaming(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(frames, media_type="text/event-stream")
