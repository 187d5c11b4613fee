"""Idempotency-Key: a POST that repeats the key of one the same API key already sent is answered with
the first one's response instead of running (and billing) again.

- The key (1-128 visible ASCII characters) is scoped to the calling API key.
- A request that ends with a 2xx (and, streamed, without an error event) is kept for 24 h, in the
  Redis every router replica shares when one is configured, else in this replica's memory (within
  its bytes and entries, oldest dropped first; router/http/idempotency_stores.py); a repeat with the
  same route and body gets it again, streams included, with `Idempotent-Replayed: true`, and
  leaves no new ledger record.
- A repeat while the first is still running: 409 (retry after a second).
- The same key with another route or body: 422.
- A first request that ends otherwise (an error, a stream that ended with an error event, a client
  that left, a body refused as too large) keeps nothing: a retry runs. A refused body runs nothing.
- While Redis does not answer, keyed requests run as if they had no key (logged): a retry in that
  time may run twice, which is better than refusing every keyed request.
- A reconnect to a stream (`Last-Event-ID`, router/http/runs.py) is not a repeat: it follows the
  first request's run, and is never answered from here."""

from __future__ import annotations

import hashlib
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import (
    IdempotencyConflict,
    IdempotencyKeyReused,
    InvalidRequest,
    ServiceError,
    error_response,
)
from router.http.idempotency_stores import Entry, IdempotencyStore, MemoryStore, Response, Slot
from router.usage.sharedstate import StateUnavailable
from router.wire.rules import header_id
from router.wire.sse import stream_failures

log = logging.getLogger("ray.serve")


class Idempotency:
    """Pure ASGI middleware, inside auth (it needs the caller's key) and the body limit."""

    def __init__(self, app: ASGIApp, store: IdempotencyStore | None = None):
        self.app = app
        self.store = store or MemoryStore()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", []))
        raw = headers.get(b"idempotency-key")
        if scope["type"] != "http" or scope["method"] != "POST" or raw is None \
                or b"last-event-id" in headers:
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
        body = await read_body(receive)
        if body is None:
            return  # refused by the body limit (its 413 is sent) or the client left: run nothing
        slot = (scope["state"]["api_key"].id, key)
        fingerprint = hashlib.sha256(scope["path"].encode() + b"?" + scope.get("query_string", b"")
                                     + b"\n" + body).hexdigest()
        try:
            held = await self.store.claim(slot, fingerprint)
        except StateUnavailable as error:
            log.warning("Idempotency-Key not checked: %s", error.reason)
            await self.app(scope, _replay(body, receive), send)
            return
        if held is not None:
            await _repeat(held, fingerprint, scope, receive, send)
            return
        await self._first(slot, fingerprint, scope, _replay(body, receive), send)

    async def _first(self, slot: Slot, fingerprint: str, scope: Scope, receive: Receive,
                     send: Send) -> None:
        response = Response()
        with stream_failures() as failures:
            try:
                await self.app(scope, receive, _captured(send, response, self.store.max_entry_bytes))
            finally:
                await self._settle(slot, fingerprint, response, failed=bool(failures))

    async def _settle(self, slot: Slot, fingerprint: str, response: Response, failed: bool) -> None:
        try:
            if response.complete and 200 <= response.status < 300 and not failed:
                await self.store.keep(slot, fingerprint, response)
            else:
                await self.store.release(slot)  # nothing kept: a retry runs
        except StateUnavailable as error:
            log.warning("Idempotency-Key entry not settled (its marker expires): %s", error.reason)


async def _repeat(entry: Entry, fingerprint: str, scope: Scope, receive: Receive,
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


async def read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when the client left (or the body limit refused it) first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
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


def _captured(send: Send, response: Response, limit: int) -> Send:
    """Sends on, and keeps a copy up to `limit` bytes (past it, the response is not complete)."""
    async def capture(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body" and response.status:
            response.body += message.get("body", b"")
            response.complete = not message.get("more_body", False)
            if len(response.body) > limit:
                response.status, response.body = 0, bytearray()  # too large to keep
        await send(message)
    return capture
