"""`api`: the whole HTTP API in process (tests/fakes/inprocess.py), fresh for each test; `shared_state`:
the tests' own Redis as the router's rate limits and budgets use it (give keys a per-test prefix)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from router.usage.sharedstate import SharedState
from tests.fakes.inprocess import InProcess, config, start
from tests.redis_server import RedisServer


@pytest_asyncio.fixture(loop_scope="function")
async def api(tmp_path: Any) -> AsyncIterator[InProcess]:
    running = start(config(tmp_path))
    yield running
    await running.close()


@pytest_asyncio.fixture(loop_scope="function")
async def shared_state(own_redis: RedisServer) -> AsyncIterator[SharedState]:
    # Generous timeouts: these tests are about the stores' logic, on a machine that may be busy.
    state = SharedState.connect(own_redis.url, timeout_s=5.0)
    yield state
    await state.client.aclose()
