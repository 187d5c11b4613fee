"""Runs mirrored in Redis, so that a reconnect to another router replica resumes the run
(router/services/runs.py keeps them in each replica's memory).

Per run: a stream `learnx:run:<id>` of its frames (an entry holds the frames written together, its
id `<n>-0` for n its last frame's number; `<last>-1` is the end, whose `end` field says how it
ended), at most `max_events` entries long and trimmed to the
same first frame as the owner's memory; a hash `learnx:run:<id>:meta` (who started it, the
request's fingerprint, the response's headers, status, `stop` once stopped); while a follower on
another replica reads it, `learnx:run:<id>:att` (a heartbeat the owner checks before cancelling
the run at the end of its grace period). The stream expires `keep_s` after the run's last write,
the meta hash at twice that (an id whose events expired is a 410, not a 404).

One task per replica writes: frames are queued and written by one pipeline at a time, in order,
at most every FLUSH_S (a busy replica makes fewer, larger writes).
One task per replica reads for the followers of other replicas' runs (one XREAD over all of
them), and one listens on the `learnx:runs` channel for stops and resumes sent to other replicas.
While Redis does not answer, writes are dropped (logged): a run that missed frames cannot be
resumed elsewhere (a gap is a 410); on its own replica it still can."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from core.config import ResumeConfig
from core.errors import (
    InvalidRequest,
    RunExpired,
    RunMismatch,
    RunNotFound,
    RunStopped,
    StorageUnavailable,
)
from router.services.runs import Owner, Resumed, Run, Runs
from router.usage.sharedstate import SharedState, StateUnavailable
from router.wire.replies import RunState as Status

log = logging.getLogger("ray.serve")
PREFIX = "learnx:run:"
CHANNEL = "learnx:runs"
BLOCK_MS = 100  # one XREAD waits this long for any followed run: a newly followed run waits it
HEARTBEAT_MS = 3000  # a remote follower's mark lives this long, refreshed every second
# Waits before each look for a run's meta hash: a busy owner may write it late (an unknown id's 404
# costs them all, 1.55 s).
LOOKUPS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)
STALL_S = 120.0  # a remote follower gives up on a run that wrote nothing for this long
REFRESH_S = 1.0  # a live run's expiry is extended (and its stop mark read) at most this often
FLUSH_S = 0.05  # writes wait this long after the last to gather frames: fewer round trips
Entry = tuple[bytes, dict[bytes, bytes]]
Write = Callable[[Any], None]


def stream_key(run_id: str) -> str:
    return PREFIX + run_id


def _seq(entry_id: bytes) -> tuple[int, int]:
    ms, _, sub = entry_id.partition(b"-")
    return int(ms), int(sub)


@dataclass(eq=False)
class _Subscription:
    key: str
    last: bytes  # the last entry id delivered
    entries: asyncio.Queue[list[Entry]] = field(default_factory=asyncio.Queue)


class RedisMirror:
    def __init__(self, state: SharedState, config: ResumeConfig, url: str | None = None):
        self.state = state
        self.config = config
        self._url = url  # the channel's own connection (None: no stops or resumes across replicas)
        self._runs: Runs | None = None
        # (run id, a write or a frame (seq, bytes)), in order; a run's frames queued together are
        # written as one entry
        self._pending: list[tuple[str, Write | tuple[int, bytes]]] = []
        self._live: dict[str, Run] = {}  # this replica's running runs, for their `stop` mark
        self._refreshed: dict[str, float] = {}  # a live run's last expiry extension (loop time)
        self._subscriptions: set[_Subscription] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def bind(self, runs: Runs) -> None:
        self._runs = runs

    # -- this replica's runs, written -------------------------------------------------------------

    def started(self, run: Run) -> None:
        self._live[run.id] = run
        meta = {"key": run.owner.key, "tenant": run.owner.tenant, "fp": run.fingerprint,
                "headers": json.dumps(run.headers), "status": "running"}
        self._queue(run.id, lambda pipe: pipe.hset(f"{stream_key(run.id)}:meta", mapping=meta))
        self._ensure("listen", self._listen)

    def appended(self, run: Run, seq: int, frame: bytes) -> None:
        self._queue(run.id, (seq, frame))

    def trimmed(self, run: Run) -> None:
        first = run.first
        self._queue(run.id, lambda pipe: pipe.xtrim(stream_key(run.id), minid=f"{first}-0",
                                                    approximate=False))

    def ended(self, run: Run) -> None:
        self._live.pop(run.id, None)
        last, status = run.last, run.status
        key = stream_key(run.id)

        def end(pipe: Any) -> None:
            pipe.xadd(key, {"end": status}, id=f"{last}-1")
            pipe.hset(f"{key}:meta", mapping={"status": status, "last": last})
        self._queue(run.id, end)

    def _queue(self, run_id: str, write: Write | tuple[int, bytes]) -> None:
        self._pending.append((run_id, write))
        self._ensure("write", self._write)

    def _ensure(self, name: str, work: Callable[[], Any]) -> None:
        task = self._tasks.get(name)
        if task is None or task.done():
            self._tasks[name] = asyncio.get_running_loop().create_task(work())

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        while self._pending:
            await asyncio.sleep(max(0.0, last + FLUSH_S - loop.time()))  # frames gather meanwhile
            last = loop.time()
            writes, self._pending = self._pending, []
            pipe = self.state.client.pipeline(transaction=False)
            self._commands(pipe, writes)
            live = self._refresh(pipe, list(dict.fromkeys(run_id for run_id, _ in writes)))
            try:
                found = await self.state.run(functools.partial(pipe.execute, raise_on_error=False))
            except StateUnavailable as error:
                log.warning("runs not mirrored (%d writes dropped): %s", len(writes), error.reason)
                continue
            for run_id, stop in zip(live, found[len(found) - len(live):], strict=True):
                if isinstance(stop, bytes) and self._runs is not None:
                    self._runs.stop_here(run_id)

    def _commands(self, pipe: Any, writes: list[tuple[str, Write | tuple[int, bytes]]]) -> None:
        """The writes in order, each run's consecutive frames as one stream entry: its id is the
        last frame's number, `n` the first's, `f` the frames, `s` their sizes."""
        frames: dict[str, list[tuple[int, bytes]]] = {}
        for run_id, write in writes:
            if isinstance(write, tuple):
                frames.setdefault(run_id, []).append(write)
                continue
            self._entry(pipe, run_id, frames.pop(run_id, []))
            write(pipe)
        for run_id, batch in frames.items():
            self._entry(pipe, run_id, batch)

    def _entry(self, pipe: Any, run_id: str, frames: list[tuple[int, bytes]]) -> None:
        if frames:
            pipe.xadd(stream_key(run_id), {"n": frames[0][0], "f": b"".join(f for _, f in frames),
                                           "s": ",".join(str(len(f)) for _, f in frames)},
                      id=f"{frames[-1][0]}-0", maxlen=self.config.max_events, approximate=False)

    def _refresh(self, pipe: Any, touched: list[str]) -> list[str]:
        """Extend the expiry of the runs written to (at their start and end, and at most once a
        second between: not at every frame), and read the `stop` mark of the live ones among
        them (a stop whose message was lost); the live runs whose mark is read, in order."""
        now = asyncio.get_running_loop().time()
        live = []
        for run_id in touched:
            running = run_id in self._live
            if running and now - self._refreshed.get(run_id, -REFRESH_S) < REFRESH_S:
                continue
            key = stream_key(run_id)
            pipe.expire(key, int(self.config.keep_s))
            pipe.expire(f"{key}:meta", int(2 * self.config.keep_s))
            if running:
                self._refreshed[run_id] = now
                live.append(run_id)
            else:
                self._refreshed.pop(run_id, None)
        for run_id in live:
            pipe.hget(f"{stream_key(run_id)}:meta", "stop")
        return live

    async def attached(self, run: Run) -> bool:
        try:
            return bool(await self.state.run(
                lambda: self.state.client.exists(f"{stream_key(run.id)}:att")))
        except StateUnavailable:
            return False

    # -- other replicas' runs, read ---------------------------------------------------------------

    async def _look(self, owner: Owner, run_id: str,
                    after: int | None = None) -> tuple[dict[str, str], list[Entry]]:
        """The run's meta hash, if `owner` started it, and (`after`) its entries after that
        frame, in one round trip. A run just started may not be written yet when its client
        reconnects at once: it is looked for a few times (an unknown id costs those waits)."""
        key = stream_key(run_id)
        raw: dict[bytes, bytes] = {}
        entries: list[Entry] = []
        for wait in LOOKUPS:
            await asyncio.sleep(wait)
            raw, entries = await self._call(lambda: self._opening(key, after))
            if raw:
                break
        meta = {k.decode(): v.decode() for k, v in raw.items()}
        if not meta or (meta.get("key"), meta.get("tenant")) != (owner.key, owner.tenant):
            raise RunNotFound(run_id)
        return meta, entries

    async def _call(self, call: Callable[[], Any]) -> Any:
        try:
            return await self.state.run(call)
        except StateUnavailable as error:
            raise _unavailable(error) from None

    async def resume(self, owner: Owner, run_id: str, fingerprint: str | None,
                     after: int) -> Resumed:
        meta, entries = await self._look(owner, run_id, after)
        if fingerprint is not None and fingerprint != meta.get("fp"):
            raise RunMismatch(run_id)
        status = _status(meta)
        if meta.get("stop") or status == "stopped":
            raise RunStopped(run_id)
        if status == "abandoned":
            raise RunExpired(f"the run {run_id!r} was cancelled {self.config.grace_s:g} s after "
                             "its last client left: send the request again without Last-Event-ID")
        key = stream_key(run_id)
        first = next((n for n, _ in _frames(entries[:1])), None)
        if (first is not None and first > after + 1) or (not entries and status != "running"):
            if not entries and after >= int(meta.get("last", 0)):
                raise InvalidRequest(f"Last-Event-ID names event {after} of run {run_id!r}, "
                                     f"which sent {meta.get('last')}", param="Last-Event-ID")
            raise RunExpired(f"the events of run {run_id!r} after {after} are no longer kept: "
                             "send the request again without Last-Event-ID")
        if status == "running":
            await self._publish(f"resume {run_id}")
        return Resumed(json.loads(meta["headers"]), self._follow(key, after, entries))

    async def _opening(self, key: str,
                       after: int | None) -> tuple[dict[bytes, bytes], list[Entry]]:
        pipe = self.state.client.pipeline(transaction=False)
        pipe.hgetall(f"{key}:meta")
        if after is not None:  # a follower from now on: the owner keeps the run past its grace
            pipe.set(f"{key}:att", 1, px=HEARTBEAT_MS)
            pipe.xrange(key, min=f"{after + 1}-0", count=self.config.max_events + 1)
        found = await pipe.execute()
        return found[0], found[2] if after is not None else []

    async def _follow(self, key: str, after: int, entries: list[Entry]) -> AsyncIterator[bytes]:
        """The frames of `entries`, then those the feed reads, until the end entry. A gap (frames
        the owner could not write) ends the response: the reconnect is a 410."""
        seq = after
        subscription = _Subscription(key, entries[-1][0] if entries else f"{after}-0".encode())
        self._subscriptions.add(subscription)
        self._ensure("read", self._read)
        try:
            while True:
                for number, frame in _frames(entries):
                    if number <= seq:
                        continue
                    if number != seq + 1:
                        return  # a gap (frames the owner could not write): the reconnect is a 410
                    seq = number
                    yield frame
                if any(_seq(entry_id)[1] for entry_id, _ in entries):
                    return  # the end
                entries = await asyncio.wait_for(subscription.entries.get(), STALL_S)
        except TimeoutError:
            log.warning("run %s wrote nothing for %g s: its follower gives up", key, STALL_S)
        finally:
            self._subscriptions.discard(subscription)

    async def _read(self) -> None:
        """Feed every subscription of this replica from one XREAD at a time, and keep their
        heartbeats alive."""
        beat = 0.0
        loop = asyncio.get_running_loop()
        while self._subscriptions:
            if loop.time() - beat > 1.0:
                beat = loop.time()
                await self._beat({s.key for s in self._subscriptions})
            ready = [s for s in self._subscriptions if s.entries.qsize() < 8]  # else: backpressure
            if not ready:
                await asyncio.sleep(BLOCK_MS / 1000)
                continue
            for name, got in await self._next(ready):
                for s in ready:
                    newer = [e for e in got if s.key == name and _seq(e[0]) > _seq(s.last)]
                    if newer:
                        s.last = newer[-1][0]
                        s.entries.put_nowait(newer)

    async def _next(self, ready: list[_Subscription]) -> list[tuple[str, list[Entry]]]:
        """New entries of the subscribed runs, waiting up to BLOCK_MS for any."""
        streams: dict[Any, Any] = {}
        for s in ready:
            streams[s.key] = min(streams.get(s.key, s.last), s.last, key=_seq)
        try:
            found: Any = await self.state.run(  # RESP2: [[name, entries], ...]
                lambda: self.state.client.xread(streams, count=1000, block=BLOCK_MS))
        except StateUnavailable:
            await asyncio.sleep(0.2)
            return []
        return [(name.decode(), entries) for name, entries in found or []]

    async def _beat(self, keys: set[str]) -> None:
        pipe = self.state.client.pipeline(transaction=False)
        for key in keys:
            pipe.set(f"{key}:att", 1, px=HEARTBEAT_MS)
        with contextlib.suppress(StateUnavailable):
            await self.state.run(pipe.execute)

    async def stop(self, owner: Owner, run_id: str) -> Status:
        meta, _ = await self._look(owner, run_id)
        status = _status(meta)
        if status != "running":
            return status
        key = f"{stream_key(run_id)}:meta"
        await self._call(lambda: self.state.client.hset(key, "stop", 1))
        await self._publish(f"stop {run_id}")
        return "stopped"

    # -- the channel ------------------------------------------------------------------------------

    async def _publish(self, message: str) -> None:
        # Lost while Redis is down: a stop is still seen at the owner's next write; a resume goes
        # uncounted.
        with contextlib.suppress(StateUnavailable):
            await self.state.run(lambda: self.state.client.publish(CHANNEL, message))

    async def _listen(self) -> None:
        """Stops and resumes of this replica's runs that other replicas were sent."""
        if self._url is None:
            return
        while True:
            client = aioredis.Redis.from_url(self._url, socket_connect_timeout=1.0)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as channel:
                    await channel.subscribe(CHANNEL)
                    async for message in channel.listen():
                        self._heard(message.get("data", b""))
            except (aioredis.RedisError, OSError) as error:
                log.warning("the runs channel failed (%s); listening again", type(error).__name__)
                await asyncio.sleep(1.0)
            finally:
                await client.aclose()

    def _heard(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        what, _, run_id = text.partition(" ")
        if self._runs is None:
            return
        if what == "stop":
            self._runs.stop_here(run_id)
        elif what == "resume":
            self._runs.resumed_here(run_id)

    async def close(self) -> None:
        writing = self._tasks.get("write")
        if writing is not None:  # the runs' ends, written before the connections go
            await asyncio.wait([writing], timeout=2.0)
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.state.client.aclose()


def _frames(entries: list[Entry]) -> Iterator[tuple[int, bytes]]:
    """(number, frame) of the frames the entries hold (an end entry holds none)."""
    for _, fields in entries:
        if b"n" not in fields:
            continue
        data, offset = fields[b"f"], 0
        for index, size in enumerate(fields[b"s"].split(b",")):
            yield int(fields[b"n"]) + index, data[offset:offset + int(size)]
            offset += int(size)


def _status(meta: dict[str, str]) -> Status:
    found = meta.get("status", "running")
    statuses: tuple[Status, ...] = ("running", "completed", "stopped", "abandoned")
    return next((s for s in statuses if s == found), "running")


def _unavailable(error: StateUnavailable) -> StorageUnavailable:
    return StorageUnavailable(f"runs cannot be resumed on this replica now: {error.reason}",
                              code="runs_unavailable", retry_after=error.retry_after)
