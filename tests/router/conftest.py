"""`api`: the whole HTTP API in process (tests/fakes/inprocess.py), fresh for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from tests.fakes.inprocess import InProcess, config, start


@pytest_asyncio.fixture(loop_scope="function")
async def api(tmp_path: Any) -> AsyncIterator[InProcess]:
    running = start(config(tmp_path))
    yield running
    await running.close()
