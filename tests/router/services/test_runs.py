"""Runs in one replica's memory (router/services/runs.py): frames numbered and kept, a follower that
leaves and comes back gets what it missed, the generation goes on for the grace period and no
longer, a stop ends the stream with its error event and stays, bounds hold, and only the key that
started a run follows it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from core.config import ResumeConfig
from core.errors import RunExpired, RunMismatch, RunNotFound, RunStopped
from router.services.runs import Owner, Run, Runs
from router.wire import sse
from tests.fakes.clock import Clock

OWNER = Owner("backend", "backend")


@dataclass
class Tally:
    resumes: int = 0
    stopped: bool = False


class Source:
    """Events released one at a time by the test (`release`), or all at once (`free`)."""

    def __init__(self, count: int):
        self.count = count
        self.released = asyncio.Semaphore(0)
        self.sent = 0
        self.finished: BaseException | None = None

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.released.release()

    async def events(self) -> AsyncIterator[dict[str, int]]:
        try:
            for n in range(self.count):
                await self.released.acquire()
                self.sent += 1
                yield {"n": n}
        except BaseException as error:
            self.finished = error
            raise


def start(runs: Runs, source: Source, fp: str = "fp") -> tuple[Run, Tally]:
    tally = Tally()
    run = runs.start(OWNER, fp, {}, tally, lambda r: sse.encode_stream(
        r.stoppable(source.events()), run=r.id))
    return run, tally


async def take(frames: AsyncIterator[bytes], n: int) -> list[bytes]:
    return [await anext(frames) for _ in range(n)]


def ids(frames: list[bytes]) -> list[int]:
    return [int(f.split(b"\n")[0].rsplit(b":", 1)[1]) for f in frames]


async def test_a_follower_that_comes_back_gets_what_it_missed_then_the_rest() -> None:
    runs = Runs(ResumeConfig(grace_s=5))
    source = Source(6)
    run, tally = start(runs, source)
    first = run.follow(0)
    source.release(2)
    got = await take(first, 2)
    assert got[0].startswith(f"id: {run.id}:1\n".encode())
    await first.aclose()  # the connection drops
    run.detach()
    source.release(2)  # the generation goes on meanwhile
    await asyncio.sleep(0.01)
    assert source.sent == 4 and run.status == "running"
    resumed = await runs.resume(OWNER, run.id, "fp", 2)
    source.release(2)
    rest = [frame async for frame in resumed.frames]
    assert ids(got + rest) == [1, 2, 3, 4, 5, 6, 7]  # six events and [DONE], each once
    assert rest[-1].endswith(sse.DONE)
    assert tally.resumes == 1 and run.status == "completed"


async def test_after_the_grace_period_without_a_follower_the_run_is_cancelled() -> None:
    runs = Runs(ResumeConfig(grace_s=0.05))
    source = Source(10)
    run, _ = start(runs, source)
    frames = run.follow(0)
    source.release()
    await take(frames, 1)
    await frames.aclose()
    run.detach()
    await asyncio.sleep(0.2)
    assert isinstance(source.finished, asyncio.CancelledError) and run.status == "abandoned"
    with pytest.raises(RunExpired):
        await runs.resume(OWNER, run.id, "fp", 1)


async def test_without_a_grace_period_a_client_that_leaves_cancels_at_once() -> None:
    runs = Runs(ResumeConfig(grace_s=0))
    source = Source(10)
    run, _ = start(runs, source)
    frames = run.follow(0)
    source.release()
    await take(frames, 1)
    await frames.aclose()
    run.detach()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert isinstance(source.finished, asyncio.CancelledError)


async def test_a_stopped_run_ends_with_its_error_event_and_stays_stopped() -> None:
    runs = Runs(ResumeConfig())
    source = Source(10)
    run, tally = start(runs, source)
    frames = run.follow(0)
    source.release()
    await take(frames, 1)
    assert await runs.stop(OWNER, run.id) == "stopped"
    rest = [frame async for frame in frames]
    assert b'"code":"run_stopped"' in rest[0] and rest[-1].endswith(sse.DONE)
    assert tally.stopped and run.status == "stopped"
    with pytest.raises(RunStopped):
        await runs.resume(OWNER, run.id, "fp", 1)
    assert await runs.stop(OWNER, run.id) == "stopped"


async def test_only_the_key_that_started_a_run_follows_it_with_the_same_request() -> None:
    runs = Runs(ResumeConfig())
    source = Source(1)
    run, _ = start(runs, source)
    source.release()
    [frame async for frame in run.follow(0)]
    for other in (Owner("intruder", "backend"), Owner("backend", "another-tenant")):
        with pytest.raises(RunNotFound):
            await runs.resume(other, run.id, "fp", 0)
        with pytest.raises(RunNotFound):
            await runs.stop(other, run.id)
    with pytest.raises(RunMismatch):
        await runs.resume(OWNER, run.id, "another body", 0)
    with pytest.raises(RunNotFound):
        await runs.resume(OWNER, "run_" + "0" * 32, "fp", 0)


async def test_a_finished_run_replays_its_tail_and_counts_no_resume() -> None:
    runs = Runs(ResumeConfig())
    source = Source(3)
    run, tally = start(runs, source)
    source.release(3)
    everything = [frame async for frame in run.follow(0)]
    resumed = await runs.resume(OWNER, run.id, None, 2)
    assert [frame async for frame in resumed.frames] == everything[2:]
    assert tally.resumes == 0


async def test_a_long_run_keeps_its_newest_events_within_its_bounds() -> None:
    runs = Runs(ResumeConfig(max_events=10, max_bytes=10_000))
    source = Source(50)
    run, _ = start(runs, source)
    source.release(50)
    [frame async for frame in run.follow(0)]
    assert len(run.frames) <= 10 and run.last == 51
    with pytest.raises(RunExpired):
        await runs.resume(OWNER, run.id, "fp", 5)
    resumed = await runs.resume(OWNER, run.id, "fp", 48)
    assert ids([frame async for frame in resumed.frames]) == [49, 50, 51]
    small = Runs(ResumeConfig(max_events=1000, max_bytes=300))
    run, _ = start(small, source := Source(50))
    source.release(50)
    [frame async for frame in run.follow(0)]
    assert run.size <= 300 and run.size == sum(len(f) for f in run.frames)


async def test_ended_runs_are_dropped_past_max_runs_and_keep_s() -> None:
    clock = Clock()
    runs = Runs(ResumeConfig(max_runs=2, keep_s=60), clock=clock)
    done = []
    for _ in range(3):
        source = Source(1)
        run, _ = start(runs, source)
        source.release()
        [frame async for frame in run.follow(0)]
        done.append(run)
    start(runs, Source(1))  # a fourth: the oldest ended runs make room
    assert len(runs) <= 2 + 1
    with pytest.raises(RunExpired):
        await runs.resume(OWNER, done[0].id, "fp", 0)
    with pytest.raises(RunNotFound):
        await runs.resume(Owner("intruder", "x"), done[0].id, "fp", 0)
    clock.advance(61)
    with pytest.raises(RunExpired):
        await runs.resume(OWNER, done[2].id, "fp", 0)
    await runs.close()
