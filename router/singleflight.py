"""Single flight: identical in-flight requests share one upstream run; every subscriber receives the
complete event stream (what was produced before it joined, then the rest)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

Event = dict[str, Any]


class Flight:
    def __init__(self, source: AsyncIterator[Event], on_done: Callable[[], None]):
        self._events: list[Event] = []
        self._done = False
        self._changed = asyncio.Condition()
        self._subscribers = 0
        self._task = asyncio.create_task(self._pump(source, on_done))  # referenced: never GC'd

    async def _pump(self, source: AsyncIterator[Event], on_done: Callable[[], None]) -> None:
        try:
            async for event in source:
                async with self._changed:
                    self._events.append(event)
                    self._changed.notify_all()
        finally:
            on_done()
            async with self._changed:
                self._done = True
                self._changed.notify_all()

    async def subscribe(self) -> AsyncIterator[tuple[Event, int]]:
        """(event, this subscriber's number: 0 for the one whose request started the run)."""
        number = self._subscribers
        self._subscribers += 1
        seen = 0
        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._beyond, seen))
                batch, done = self._events[seen:], self._done
            seen += len(batch)
            for event in batch:
                yield event, number
            if done and seen == len(self._events):
                return

    def _beyond(self, seen: int) -> bool:
        return len(self._events) > seen or self._done

    @property
    def subscribers(self) -> int:
        return self._subscribers


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}
        self.started = 0  # upstream runs actually made

    def running(self, key: str) -> bool:
        return key in self._flights

    def join(self, key: str, start: Callable[[], AsyncIterator[Event]]) -> Flight:
        if key not in self._flights:
            self.started += 1
            self._flights[key] = Flight(start(), lambda: self._forget(key))
        return self._flights[key]

    def _forget(self, key: str) -> None:
        self._flights.pop(key, None)
