from collections.abc import AsyncIterator

import pytest_asyncio

from tests.router.run.providers.test_hosted import OPENED


@pytest_asyncio.fixture(autouse=True, loop_scope="function")
async def _closed() -> AsyncIterator[None]:
    """Each test's providers (made by test_hosted's helpers) are closed on its own event loop."""
    yield
    while OPENED:
        await OPENED.pop().aclose()
