"""Single flight: identical in-flight requests share one upstream run; every subscriber receives the
complete event stream (what was produced before it joined, then the rest) and, if the run fails,
the failure. A run whose every subscriber has left is cancelled: nobody would read the rest."""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

Event = dict[str, Any]


class Flight:
    def __init__(self, start: Callable[[Flight], AsyncIterator[Event]],
                 forget: Callable[[], None]):
        self._events: list[Event] = []
        self._done = False
        self._changed = asyncio.Condition()
        self._subscribers = 0
        self._present: set[int] = set()
        self.left_early: set[int] = set()  # subscribers that left before the run ended
        self.failure: Exception | None = None
        self._forget = forget
        self._task = asyncio.create_task(self._pump(start(self)))  # referenced: never GC'd

    async def _pump(self, source: AsyncIterator[Event]) -> None:
        try:
            async for event in source:
                async with self._changed:
                    self._events.append(event)
                    self._changed.notify_all()
        except Exception as error:  # every subscriber gets it, once it has the events before it
            self.failure = error
        except asyncio.CancelledError:
            pass  # abandoned by its last subscriber
        finally:
            self._forget()
            async with self._changed:
                self._done = True
                self._changed.notify_all()

    async def subscribe(self) -> AsyncIterator[tuple[Event, int]]:
        """(event, this subscriber's number: 0 for the first); raises the run's failure at the end."""
        number = self._subscribers
        self._subscribers += 1
        self._present.add(number)
        seen = 0
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(functools.partial(self._beyond, seen))
                    batch, done = self._events[seen:], self._done
                seen += len(batch)
                for event in batch:
                    yield event, number
                if done and seen == len(self._events):
                    break
        finally:
            self._present.discard(number)
            if not self._done:
                self.left_early.add(number)
                if not self._present:
                    self._abandon()
        if self.failure is not None:
            raise copy.copy(self.failure)  # a copy each: tracebacks are per raise

    def _abandon(self) -> None:
        self._forget()  # nobody joins a run that is being cancelled
        self._task.cancel()

    def _beyond(self, seen: int) -> bool:
        return len(self._events) > seen or self._done


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}
        self.started = 0  # upstream runs actually made

    def join(self, key: str, start: Callable[[Flight], AsyncIterator[Event]]) -> tuple[Flight, bool]:
        """The flight running under `key`, or a new one made by `start`; True if it is new."""
        if key in self._flights:
            return self._flights[key], False
        self.started += 1
        flight = Flight(start, lambda: self._forget(key, flight))
        self._flights[key] = flight
        return flight, True

    def running(self, key: str) -> bool:
        """Whether a run under `key` is in flight (one that ended has left)."""
        return key in self._flights

    def _forget(self, key: str, flight: Flight) -> None:
        if self._flights.get(key) is flight:  # not a newer flight under the same key
            del self._flights[key]
