"""Readiness (GET /ready): every local model deployment and the embedder answer their health checks.
The route is open (no key), so one fan-out answers every probe for READY_CACHE_S, concurrent probes
included."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

HealthCheck = Callable[[], Awaitable[None]]
READY_CACHE_S = 1.5
CHECK_TIMEOUT_S = 5.0

Result = tuple[bool, dict[str, str]]  # all ready, and per check: ok or why not


class Readiness:
    def __init__(self, checks: dict[str, HealthCheck],
                 clock: Callable[[], float] = time.monotonic):
        self.checks = checks
        self._clock = clock
        self._last: tuple[float, asyncio.Future[Result]] | None = None

    async def results(self) -> Result:
        """The last fan-out's results while fresh (or running), else a new fan-out's."""
        now = self._clock()
        if self._last is None or now - self._last[0] >= READY_CACHE_S:
            self._last = (now, asyncio.ensure_future(self._fan_out()))
        return await asyncio.shield(self._last[1])

    async def _fan_out(self) -> Result:
        names = sorted(self.checks)
        found = await asyncio.gather(*(asyncio.wait_for(self.checks[n](), CHECK_TIMEOUT_S)
                                       for n in names), return_exceptions=True)
        models = {n: "ok" if r is None else f"unavailable ({type(r).__name__})"
                  for n, r in zip(names, found, strict=True)}
        return all(r is None for r in found), models
