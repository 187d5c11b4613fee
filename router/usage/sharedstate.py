"""The Redis that every router replica shares its rate limits and budgets through, behind a circuit
breaker (like the vector cache's): when Redis is down, or hung and answering nothing, a few calls
wait out the short socket timeout, the breaker opens, and later calls fail at once instead of each
costing the timeout. What a failure means is the caller's decision: rate limits let the request in
(fail open), budgets let only free local models serve (fail closed on money), Idempotency-Keys
are not checked (router/http/idempotency.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis

from core.breakers import BreakerSettings, CircuitBreaker, State

log = logging.getLogger("ray.serve")
T = TypeVar("T")
# Redis answers in well under a millisecond; a call this slow means it is hung or unreachable (or
# this replica's CPU is starved: not much shorter, then). Waiting for a free connection of the pool
# is local contention, not a Redis failure: it may take longer.
TIMEOUT_S = 0.5
POOL_WAIT_S = 2.0
SETTINGS = BreakerSettings(failure_threshold=3, cooldown_s=1.0, max_cooldown_s=5.0)


class StateUnavailable(Exception):
    """The shared-state store did not answer, or its breaker is open."""

    def __init__(self, reason: str, retry_after: float):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class SharedState:
    def __init__(self, client: aioredis.Redis, breaker: CircuitBreaker | None = None):
        self.client = client
        self.breaker = breaker or CircuitBreaker(SETTINGS, on_change=_log_change)

    @classmethod
    def connect(cls, url: str, max_connections: int = 64,
                timeout_s: float = TIMEOUT_S) -> SharedState:
        """A client whose calls wait their turn for a connection (redis-py's default pool raises
        at once past 100 calls in flight) and time out quickly."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=POOL_WAIT_S, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s)
        return cls(aioredis.Redis.from_pool(pool))

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise StateUnavailable("the shared-state store (Redis) is unavailable",
                                   max(self.breaker.retry_after(), 1.0))
        try:
            result = await call()
        except (aioredis.RedisError, OSError) as error:
            self.breaker.record_failure()
            raise StateUnavailable(f"the shared-state store (Redis) failed ({type(error).__name__})",
                                   max(self.breaker.retry_after(), 1.0)) from error
        except BaseException:
            self.breaker.record_failure("ignore")  # cancelled: proves nothing, frees a probe
            raise
        self.breaker.record_success()
        return result


def _log_change(state: State) -> None:
    if state == "open":
        log.warning("shared-state store (Redis) unavailable: rate limits let requests in, "
                    "budget-limited requests are served by free local models (503 where none "
                    "can serve) until it answers again")
    elif state == "closed":
        log.warning("shared-state store (Redis) answers again")
