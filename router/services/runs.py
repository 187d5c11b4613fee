"""Runs: a stream's generation, apart from the connection that asked for it.

A streamed request starts a run: a task that pulls the stream's SSE frames (numbered by
router/wire/sse.py, `id: run_<hex>:<n>`) and keeps them, while each connection that follows the
run (the first, then every reconnect) is sent the frames after the id it names. When the last
follower leaves, the run goes on for `grace_s` waiting for a reconnect, then is cancelled as a
disconnect always was. A stop (POST /v1/runs/{id}/cancel) ends it with a `run_stopped` error
event, and every later resume is a 409.

Bounds, per replica: a run keeps at most `max_events` frames and `max_bytes` of them (past either,
the oldest are dropped down to 90 %, and a resume before them is a 410); `max_runs` runs are kept,
the oldest ended one dropped first, each for `keep_s` after it ended (live runs are never dropped:
they are bounded by the connections and the grace period). With Redis configured, the frames are
mirrored (router/services/run_mirror.py) so that a reconnect to another replica resumes the run."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from core.config import ResumeConfig
from core.errors import InvalidRequest, RunExpired, RunMismatch, RunNotFound, RunStopped
from core.ids import new_id
from router.wire.replies import RunState as Status
from router.wire.sse import RUN_HEADER

log = logging.getLogger("ray.serve")
T = TypeVar("T")
KEEP_FRACTION = 0.9  # a run over its bounds drops its oldest frames down to this share of them


@dataclass(frozen=True)
class Owner:
    """Who may follow, resume and stop a run: the API key that started it, of its tenant."""

    key: str
    tenant: str


class Tally(Protocol):
    """What a run tells the request's meter (router/usage/meter.py)."""

    resumes: int
    stopped: bool


class Mirror(Protocol):
    """Where runs are copied for the other replicas, and found from them
    (router/services/run_mirror.py: Redis)."""

    def bind(self, runs: Runs) -> None:
        """The replica's runs, that stops and resumes sent to other replicas reach."""
        ...

    def started(self, run: Run) -> None: ...

    def appended(self, run: Run, seq: int, frame: bytes) -> None: ...

    def trimmed(self, run: Run) -> None: ...

    def ended(self, run: Run) -> None: ...

    async def attached(self, run: Run) -> bool:
        """Whether a follower on another replica still reads `run`."""
        ...

    async def resume(self, owner: Owner, run_id: str, fingerprint: str | None,
                     after: int) -> Resumed:
        """Another replica's run, as `Runs.resume` answers; RunNotFound when none has it."""
        ...

    async def stop(self, owner: Owner, run_id: str) -> Status:
        """Stop another replica's run; RunNotFound when none has it."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Resumed:
    headers: dict[str, str]  # the first response's
    frames: AsyncIterator[bytes]
    leave: Callable[[], None] = lambda: None  # its follower has gone (sent or not)


def new_run_id() -> str:
    return new_id("run_")


def fingerprint(route: str, body: bytes) -> str:
    """What a reconnect must send again: the route (its path inside the app) and the body."""
    return hashlib.sha256(route.encode() + b"\n" + body).hexdigest()


@dataclass(eq=False)
class Run:
    id: str
    owner: Owner
    fingerprint: str  # the request's route and body (a resume must send the same)
    headers: dict[str, str]  # the response's, sent again to each resume
    tally: Tally
    config: ResumeConfig
    mirror: Mirror | None = None
    status: Status = "running"
    ending: Literal["stop", "abandon"] | None = None  # asked for, not yet done
    first: int = 1  # the sequence number of frames[0]
    frames: list[bytes] = field(default_factory=list)
    size: int = 0  # bytes of frames
    followers: int = 1  # the first connection is counted from the start
    ended_at: float | None = None
    task: asyncio.Task[None] | None = None
    _more: asyncio.Event | None = None
    _grace: asyncio.Task[None] | None = None

    @property
    def last(self) -> int:
        """The sequence number of the newest frame (first - 1 when none is kept)."""
        return self.first + len(self.frames) - 1

    async def stoppable(self, events: AsyncIterator[T]) -> AsyncIterator[T]:
        """`events`, ending with RunStopped when the run is stopped (its stream's terminal error
        event, made by the SSE encoder) rather than with the cancellation that stopped it. A
        cancellation lost on the way (Python 3.11's wait_for can return a result instead) is
        made good at the next event."""
        try:
            async for event in events:
                if self.ending:
                    break
                yield event
            else:
                return
        except asyncio.CancelledError:
            if self.ending != "stop":
                raise
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                task.uncancel()
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]
        if self.ending == "stop":
            raise RunStopped(self.id)
        raise asyncio.CancelledError

    def append(self, frame: bytes) -> int:
        self.frames.append(frame)
        self.size += len(frame)
        if len(self.frames) > self.config.max_events or self.size > self.config.max_bytes:
            self._trim()
        self._wake()
        return self.last

    def _trim(self) -> None:
        """Drop the oldest frames down to KEEP_FRACTION of each bound (so not at every frame)."""
        events = int(self.config.max_events * KEEP_FRACTION)
        size = int(self.config.max_bytes * KEEP_FRACTION)
        drop = max(0, len(self.frames) - events)
        kept = self.size - sum(len(f) for f in self.frames[:drop])
        while drop < len(self.frames) - 1 and kept > size:
            kept -= len(self.frames[drop])
            drop += 1
        del self.frames[:drop]
        self.first += drop
        self.size = kept

    def _wake(self) -> None:
        if self._more is not None:
            self._more.set()
            self._more = None

    def end(self, status: Status, now: float) -> None:
        self.status = status
        self.ended_at = now
        if self._grace is not None:
            self._grace.cancel()
        self._wake()

    def check(self, after: int) -> None:
        """That the frames after `after` can be sent: a RunStopped, RunExpired or a 400 if not."""
        if self.status == "stopped" or self.ending == "stop":
            raise RunStopped(self.id)
        if self.status == "abandoned" or self.ending == "abandon":
            raise RunExpired(f"the run {self.id!r} was cancelled {self.config.grace_s:g} s after "
                             "its last client left: send the request again without Last-Event-ID")
        if after + 1 < self.first:
            raise RunExpired(f"the events of run {self.id!r} after {after} are no longer kept (the "
                             f"oldest kept is {self.first}): send the request again without "
                             "Last-Event-ID")
        if after > self.last and self.status != "running":
            raise InvalidRequest(f"Last-Event-ID names event {after} of run {self.id!r}, which sent "
                                 f"{self.last}", param="Last-Event-ID")

    async def follow(self, after: int) -> AsyncIterator[bytes]:
        """The frames after `after`, then the live ones until the run ends. Its follower is
        counted in (`attach`) before and out (`detach`) after, whether or not it started."""
        seq = after
        while True:
            if seq < self.last:
                batch = self.frames[max(seq + 1, self.first) - self.first:]
                seq = self.last
                for frame in batch:
                    yield frame
                continue
            if self.status != "running":
                return
            if self._more is None:
                self._more = asyncio.Event()
            await self._more.wait()

    def attach(self) -> None:
        self.followers += 1
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def detach(self) -> None:
        self.followers -= 1
        if self.followers == 0 and self.status == "running":
            self._detached()

    def _detached(self) -> None:
        """The last follower left: cancel the run after the grace period (at once without one)."""
        if self.config.grace_s <= 0:
            self.abandon()
        else:
            self._grace = asyncio.get_running_loop().create_task(self._expire())

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(self.config.grace_s)
            if self.followers or self.status != "running":
                return
            if self.mirror is None or not await self.mirror.attached(self):
                self._grace = None
                self.abandon()
                return

    def abandon(self) -> None:
        self._cancel("abandon")

    def stop(self) -> None:
        if self.status == "running" and self.ending != "stop":
            self.tally.stopped = True
            self._cancel("stop")

    def _cancel(self, why: Literal["stop", "abandon"]) -> None:
        if self.status == "running" and self.ending is None:
            self.ending = why
        if self.task is not None and not self.task.done():
            self.task.cancel()


class Runs:
    """This replica's runs, and through `mirror` those of the other replicas."""

    def __init__(self, config: ResumeConfig, mirror: Mirror | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.mirror = mirror
        self._clock = clock
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._gone: OrderedDict[str, Owner] = OrderedDict()  # dropped here: a 410, not a 404
        if mirror is not None:
            mirror.bind(self)

    def __len__(self) -> int:
        return len(self._runs)

    def start(self, owner: Owner, fingerprint: str, headers: dict[str, str], tally: Tally,
              frames: Callable[[Run], AsyncIterator[bytes]]) -> Run:
        """A new run pulling `frames(run)`; its first follower, counted in, is the caller's
        response (`run.follow(0)`, then `run.detach()`)."""
        self._sweep()
        run_id = new_run_id()
        headers = {**headers, RUN_HEADER: run_id}
        run = Run(run_id, owner, fingerprint, headers, tally, self.config, self.mirror)
        self._runs[run.id] = run
        if self.mirror is not None:
            self.mirror.started(run)
        run.task = asyncio.get_running_loop().create_task(self._pump(run, frames(run)))
        return run

    async def _pump(self, run: Run, frames: AsyncIterator[bytes]) -> None:
        status: Status = "completed"
        try:
            async for frame in frames:
                first = run.first
                seq = run.append(frame)
                if self.mirror is not None:
                    self.mirror.appended(run, seq, frame)
                    if run.first != first:
                        self.mirror.trimmed(run)
        except asyncio.CancelledError:
            status = "abandoned"
        except Exception:  # the encoder ends every stream itself: this is a bug
            log.exception("run %s failed", run.id)
        finally:
            run.end("stopped" if run.ending == "stop" else status, self._clock())
            if self.mirror is not None:
                self.mirror.ended(run)

    def _local(self, owner: Owner, run_id: str) -> Run | None:
        """This replica's run of that id, if it has it (RunNotFound when it is another key's)."""
        self._sweep()
        run = self._runs.get(run_id)
        if run is not None and run.owner != owner:
            raise RunNotFound(run_id)
        return run

    async def resume(self, owner: Owner, run_id: str, fingerprint: str | None,
                     after: int) -> Resumed:
        """The frames of `run_id` after `after`, live to its end (a reconnect), from this
        replica or another. `fingerprint`: the reconnecting request's (None: by the run id)."""
        run = self._local(owner, run_id)
        if run is None:
            if self.mirror is not None:
                return await self.mirror.resume(owner, run_id, fingerprint, after)
            self._gone_error(owner, run_id)
        assert run is not None
        if fingerprint is not None and fingerprint != run.fingerprint:
            raise RunMismatch(run.id)
        run.check(after)
        if run.status == "running":
            run.tally.resumes += 1
        run.attach()
        return Resumed(run.headers, run.follow(after), run.detach)

    async def stop(self, owner: Owner, run_id: str) -> Status:
        """Stop the run (on whichever replica runs it); its status after."""
        run = self._local(owner, run_id)
        if run is None:
            if self.mirror is not None:
                return await self.mirror.stop(owner, run_id)
            self._gone_error(owner, run_id)
        assert run is not None
        run.stop()
        return "stopped" if run.ending == "stop" else run.status

    def stop_here(self, run_id: str) -> None:
        """Stop this replica's run of that id, if any (a stop sent to another replica)."""
        run = self._runs.get(run_id)
        if run is not None:
            run.stop()

    def resumed_here(self, run_id: str) -> None:
        """Count a reconnect that another replica served (from the mirror)."""
        run = self._runs.get(run_id)
        if run is not None and run.status == "running":
            run.tally.resumes += 1

    def _gone_error(self, owner: Owner, run_id: str) -> None:
        if self._gone.get(run_id) == owner:
            raise RunExpired(f"the events of run {run_id!r} are no longer kept: send the request "
                             "again without Last-Event-ID")
        raise RunNotFound(run_id)

    def _sweep(self) -> None:
        """Drop ended runs past keep_s, and the oldest ended ones past max_runs."""
        now = self._clock()
        over = len(self._runs) - self.config.max_runs
        for run in [r for r in self._runs.values() if r.ended_at is not None]:
            assert run.ended_at is not None
            if over <= 0 and now - run.ended_at < self.config.keep_s:
                continue
            del self._runs[run.id]
            self._gone[run.id] = run.owner
            over -= 1
        while len(self._gone) > 4 * self.config.max_runs:
            self._gone.popitem(last=False)

    async def close(self) -> None:
        tasks = [r.task for r in self._runs.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self.mirror is not None:
            await self.mirror.close()
