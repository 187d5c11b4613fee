"""Idempotency-Key: a POST that repeats the key of one the same API key already sent is answered with
the first one's response instead of running (and billing) again.

- The key (1-128 visible ASCII characters) is scoped to the calling API key.
- A request that ends with a 2xx is kept for `ttl_s` (24 h) in this router replica's memory, within
  `max_bytes` in all (oldest dropped first); a repeat with the same route and body gets it again,
  streams included, with `Idempotent-Replayed: true`, and leaves no new ledger record.
- A repeat while the first is still running: 409 (retry after a second).
- The same key with another route or body: 422.
- A first request that ends otherwise (an error, a client that left) keeps nothing: a retry runs."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import (
    IdempotencyConflict,
    IdempotencyKeyReused,
    InvalidRequest,
    ServiceError,
    error_response,
)
from router.protocol import header_id

Slot = tuple[str, str]  # (API key id, Idempotency-Key)


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False


@dataclass
class Entry:
    fingerprint: str
    expires: float
    response: Response | None = None  # None while the first request runs


class Idempotency:
    """Pure ASGI middleware, inside auth (it needs the caller's key) and the body limit."""

    def __init__(self, app: ASGIApp, ttl_s: float = 24 * 3600, max_bytes: int = 64_000_000,
                 clock: Callable[[], float] = time.monotonic):
        self.app = app
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[Slot, Entry] = OrderedDict()
        self._bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = dict(scope.get("headers", [])).get(b"idempotency-key")
        if scope["type"] != "http" or scope["method"] != "POST" or raw is None:
            await self.app(scope, receive, send)
            return
        try:
            key = header_id("Idempotency-Key", raw.decode("latin-1"))
        except InvalidRequest as error:
            await error_response(error)(scope, receive, send)
            return
        if key is None:
            await self.app(scope, receive, send)
            return
        body = await _body(receive)
        slot = (scope["state"]["api_key"].id, key)
        fingerprint = hashlib.sha256(scope["path"].encode() + b"?" + scope.get("query_string", b"")
                                     + b"\n" + body).hexdigest()
        self._expire()
        entry = self._entries.get(slot)
        if entry is not None:
            await self._repeat(entry, fingerprint, scope, receive, send)
            return
        self._entries[slot] = Entry(fingerprint, self._clock() + self._ttl_s)
        response = Response()
        try:
            await self.app(scope, _replay(body, receive), _captured(send, response))
        finally:
            self._settle(slot, response)

    async def _repeat(self, entry: Entry, fingerprint: str, scope: Scope, receive: Receive,
                      send: Send) -> None:
        error: ServiceError | None = None
        if entry.fingerprint != fingerprint:
            error = IdempotencyKeyReused("this Idempotency-Key was used for another request: "
                                         "use a new key for a new request")
        elif entry.response is None:
            error = IdempotencyConflict("a request with this Idempotency-Key is still running; "
                                        "retry when it has finished")
        if error is not None:
            await error_response(error)(scope, receive, send)
            return
        assert entry.response is not None
        await send({"type": "http.response.start", "status": entry.response.status,
                    "headers": [*entry.response.headers, (b"idempotent-replayed", b"true")]})
        await send({"type": "http.response.body", "body": bytes(entry.response.body)})

    def _settle(self, slot: Slot, response: Response) -> None:
        entry = self._entries.pop(slot, None)
        if entry is None or not (response.complete and 200 <= response.status < 300):
            return  # nothing kept: a retry runs
        entry.response = response
        self._entries[slot] = entry
        self._bytes += len(response.body)
        while self._bytes > self._max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    def _expire(self) -> None:
        """Entries are in the order they were kept, which is (nearly) the order they expire."""
        now = self._clock()
        while self._entries and next(iter(self._entries.values())).expires <= now:
            self._drop(next(iter(self._entries)))

    def _drop(self, slot: Slot) -> None:
        entry = self._entries.pop(slot)
        if entry.response is not None:
            self._bytes -= len(entry.response.body)


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read already, then the client's own messages (its disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return replayed


def _captured(send: Send, response: Response) -> Send:
    async def capture(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            response.body += message.get("body", b"")
            response.complete = not message.get("more_body", False)
        await send(message)
    return capture
