"""Single flight: one run, every subscriber gets every event (late joiners included) and the run's
failure; a run whose every subscriber left is cancelled."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from core.errors import ProviderError
from router.services.singleflight import Flight, SingleFlight


async def source(gate: asyncio.Event, log: list[str] | None = None):
    log = [] if log is None else log
    try:
        yield {"n": 1}
        await gate.wait()
        yield {"n": 2}
        log.append("finished")
    except asyncio.CancelledError:
        log.append("cancelled")
        raise


async def collect(flight: Flight) -> list[tuple[dict, int]]:
    return [item async for item in flight.subscribe()]


async def test_late_joiner_gets_the_whole_stream_and_one_run_is_made() -> None:
    flights, gate, runs = SingleFlight(), asyncio.Event(), []

    def start(_: Flight):
        runs.append(1)
        return source(gate)

    leader, new = flights.join("k", start)
    first = asyncio.create_task(collect(leader))
    await asyncio.sleep(0.01)  # the first event is out
    joined, again = flights.join("k", start)
    second = asyncio.create_task(collect(joined))
    await asyncio.sleep(0.01)
    gate.set()
    a, b = await first, await second
    assert (new, again, joined) == (True, False, leader)
    assert [e for e, _ in a] == [e for e, _ in b] == [{"n": 1}, {"n": 2}]
    assert ({n for _, n in a}, {n for _, n in b}) == ({0}, {1})
    assert len(runs) == 1 and flights.started == 1


async def test_a_finished_flight_is_forgotten() -> None:
    flights, gate = SingleFlight(), asyncio.Event()
    gate.set()
    await collect(flights.join("k", lambda _: source(gate))[0])
    await collect(flights.join("k", lambda _: source(gate))[0])
    assert flights.started == 2


async def test_every_subscriber_gets_the_runs_failure_after_its_events() -> None:
    async def failing(_: Flight):
        yield {"n": 1}
        raise ProviderError("HTTP 503", provider="openai", model="gpt-4o-mini")

    flights = SingleFlight()
    flight, _ = flights.join("k", failing)
    seen: list[list[dict]] = [[], []]

    async def follow(into: list[dict]) -> None:
        with pytest.raises(ProviderError, match="HTTP 503"):
            async for event, _ in flight.subscribe():
                into.append(event)

    await asyncio.gather(follow(seen[0]), follow(seen[1]))
    assert seen == [[{"n": 1}], [{"n": 1}]]


async def test_the_run_is_cancelled_when_its_last_subscriber_leaves() -> None:
    flights, gate, log = SingleFlight(), asyncio.Event(), []
    flight, _ = flights.join("k", lambda _: source(gate, log))
    subscribers = [flight.subscribe(), flight.subscribe()]
    for events in subscribers:
        assert (await anext(events))[0] == {"n": 1}
    await subscribers[0].aclose()
    await asyncio.sleep(0.01)
    assert log == [] and flights.join("k", lambda _: source(gate))[0] is flight  # one still reads
    await subscribers[1].aclose()
    await asyncio.sleep(0.01)
    assert log == ["cancelled"] and flight.left_early == {0, 1}
    fresh, new = flights.join("k", lambda _: source(gate))  # nobody joins the cancelled run
    assert new and fresh is not flight
    with contextlib.suppress(asyncio.CancelledError):
        fresh._task.cancel()
