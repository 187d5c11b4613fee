"""Where the Idempotency middleware keeps its entries: in this router replica's memory, or in the
Redis every replica shares (router/usage/sharedstate.py), so a retry that lands on another replica is
answered from the first one's response.

A slot (API key id, Idempotency-Key) is claimed by the first request (an entry without a response:
it is running) and then either kept with the response or released."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from router.usage.sharedstate import SharedState

Slot = tuple[str, str]  # (API key id, Idempotency-Key)
DAY_S = 24 * 3600.0


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False


@dataclass(frozen=True)
class Entry:
    fingerprint: str
    response: Response | None = None  # None while the first request runs


class IdempotencyStore(Protocol):
    max_entry_bytes: int  # a larger response is not kept (its retry runs)

    async def claim(self, slot: Slot, fingerprint: str) -> Entry | None:
        """None: the slot was free and is now this request's (running); else what holds it."""
        ...

    async def keep(self, slot: Slot, fingerprint: str, response: Response) -> None: ...

    async def release(self, slot: Slot) -> None: ...


@dataclass
class _Held:
    entry: Entry
    expires: float
    size: int


class MemoryStore:
    """Entries in this replica's memory, within `max_bytes` and `max_entries` (oldest dropped
    first). What an entry counts is its body and headers plus ENTRY_OVERHEAD: measured with
    tracemalloc, the slot, fingerprint, dicts and objects of a kept entry take about 1 KB."""

    ENTRY_OVERHEAD = 1200

    def __init__(self, ttl_s: float = DAY_S, max_bytes: int = 64_000_000,
                 max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic):
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._clock = clock
        self._held: OrderedDict[Slot, _Held] = OrderedDict()
        self.bytes = 0
        self.max_entry_bytes = max(1, max_bytes // 16)

    def __len__(self) -> int:
        return len(self._held)

    async def claim(self, slot: Slot, fingerprint: str) -> Entry | None:
        self._expire()
        held = self._held.get(slot)
        if held is not None:
            return held.entry
        self._add(slot, Entry(fingerprint), self.ENTRY_OVERHEAD + sys.getsizeof(fingerprint))
        return None

    async def keep(self, slot: Slot, fingerprint: str, response: Response) -> None:
        self._drop(slot)
        size = (self.ENTRY_OVERHEAD + sys.getsizeof(fingerprint) + len(response.body)
                + sum(len(k) + len(v) + 100 for k, v in response.headers))
        self._add(slot, Entry(fingerprint, response), size)

    async def release(self, slot: Slot) -> None:
        self._drop(slot)

    def _add(self, slot: Slot, entry: Entry, size: int) -> None:
        self._held[slot] = _Held(entry, self._clock() + self._ttl_s, size)
        self.bytes += size
        while self._held and (self.bytes > self._max_bytes or len(self._held) > self._max_entries):
            self._drop(next(iter(self._held)))

    def _expire(self) -> None:
        """Entries are in the order they were kept, which is (nearly) the order they expire."""
        now = self._clock()
        while self._held and next(iter(self._held.values())).expires <= now:
            self._drop(next(iter(self._held)))

    def _drop(self, slot: Slot) -> None:
        held = self._held.pop(slot, None)
        if held is not None:
            self.bytes -= held.size


class RedisStore:
    """Entries in the shared Redis, under `idem:` and a hash of the slot: the running marker with
    `running_ttl_s` (a replica that died mid-request frees its keys then), the response with
    `ttl_s`. Raises router.usage.sharedstate.StateUnavailable when Redis does not answer."""

    def __init__(self, state: SharedState, ttl_s: float = DAY_S, running_ttl_s: float = 900.0,
                 max_entry_bytes: int = 4_000_000):
        self._state = state
        self._ttl_s = ttl_s
        self._running_ttl_s = running_ttl_s
        self.max_entry_bytes = max_entry_bytes

    async def claim(self, slot: Slot, fingerprint: str) -> Entry | None:
        key, marker = _key(slot), json.dumps({"fingerprint": fingerprint})
        client = self._state.client
        for _ in range(2):  # the holder may expire between SET NX and GET: then claim again
            if await self._state.run(lambda: client.set(key, marker, nx=True,
                                                        ex=int(self._running_ttl_s))):
                return None
            found = await self._state.run(lambda: client.get(key))
            if found is not None:
                return _decode(found)
        return None  # pragma: no cover (Redis kept expiring the same key)

    async def keep(self, slot: Slot, fingerprint: str, response: Response) -> None:
        value = json.dumps({"fingerprint": fingerprint, "status": response.status,
                            "headers": [[k.decode("latin-1"), v.decode("latin-1")]
                                        for k, v in response.headers],
                            "body": base64.b64encode(bytes(response.body)).decode("ascii")})
        client = self._state.client
        await self._state.run(lambda: client.set(_key(slot), value, ex=int(self._ttl_s)))

    async def release(self, slot: Slot) -> None:
        client = self._state.client
        await self._state.run(lambda: client.delete(_key(slot)))


def _key(slot: Slot) -> str:
    return "idem:" + hashlib.sha256(f"{slot[0]}\n{slot[1]}".encode()).hexdigest()


def _decode(raw: bytes | str) -> Entry:
    found: dict[str, Any] = json.loads(raw)
    if "status" not in found:
        return Entry(found["fingerprint"])
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in found["headers"]]
    return Entry(found["fingerprint"], Response(found["status"], headers,
                                                bytearray(base64.b64decode(found["body"])), True))
