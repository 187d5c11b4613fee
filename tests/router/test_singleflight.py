"""Single flight: one run, every subscriber gets every event, late joiners included."""

from __future__ import annotations

import asyncio

from router.singleflight import SingleFlight


async def source(gate: asyncio.Event):
    yield {"n": 1}
    await gate.wait()
    yield {"n": 2}


async def collect(flight) -> list[tuple[dict, int]]:
    return [item async for item in flight.subscribe()]


async def test_late_joiner_gets_the_whole_stream_and_one_run_is_made() -> None:
    flights, gate, runs = SingleFlight(), asyncio.Event(), []

    def start():
        runs.append(1)
        return source(gate)

    first = asyncio.create_task(collect(flights.join("k", start)))
    await asyncio.sleep(0.01)  # the first event is out
    second = asyncio.create_task(collect(flights.join("k", start)))
    await asyncio.sleep(0.01)
    gate.set()
    a, b = await first, await second
    assert [e for e, _ in a] == [e for e, _ in b] == [{"n": 1}, {"n": 2}]
    assert ({n for _, n in a}, {n for _, n in b}) == ({0}, {1})
    assert len(runs) == 1 and flights.started == 1


async def test_a_finished_flight_is_forgotten() -> None:
    flights, gate = SingleFlight(), asyncio.Event()
    gate.set()
    await collect(flights.join("k", lambda: source(gate)))
    await collect(flights.join("k", lambda: source(gate)))
    assert flights.started == 2
