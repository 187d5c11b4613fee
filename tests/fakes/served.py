"""The in-process API (tests/fakes/inprocess.py) served over real loopback HTTP by uvicorn, on the
test's own event loop: a client can drop its connection mid-stream (httpx's ASGI transport reads a
whole response before returning it), and nginx can stand in front of it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from router.http.api import build_api
from tests.fakes.inprocess import KEY, InProcess
from tests.ports import free_port


class Served:
    def __init__(self, api: InProcess):
        self.api = api
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(build_api(api.services), host="127.0.0.1", port=self.port,
                                lifespan="off", log_level="warning", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Served:
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


@dataclass
class Event:
    id: str | None
    data: str
    name: str | None = None


_FIELD = re.compile(r"^(\w+): ?(.*)$")


def parse(block: str) -> Event:
    fields: dict[str, list[str]] = {}
    for line in block.split("\n"):
        found = _FIELD.match(line)
        if found:
            fields.setdefault(found.group(1), []).append(found.group(2))
    return Event(fields.get("id", [None])[-1], "\n".join(fields.get("data", [])),
                 fields.get("event", [None])[-1])


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The SSE events of a streamed response, as they arrive."""
    pending = ""
    async for text in response.aiter_text():
        pending += text.replace("\r\n", "\n")
        *blocks, pending = pending.split("\n\n")
        for block in blocks:
            if block.strip():
                yield parse(block)


async def read(client: httpx.AsyncClient, method: str, url: str, *, cut_after: int | None = None,
               **kwargs: Any) -> tuple[httpx.Response, list[Event]]:
    """The response and its events; with `cut_after`, the connection is dropped after that many
    events (the client leaves, as when a school's Wi-Fi drops)."""
    got: list[Event] = []
    async with client.stream(method, url, **kwargs) as response:
        if response.status_code != 200 or "text/event-stream" not in response.headers.get(
                "content-type", ""):
            await response.aread()
            return response, got
        async for event in events(response):
            got.append(event)
            if cut_after is not None and len(got) >= cut_after:
                break
    return response, got


def client(url: str, key: str = KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30)
