"""/ready is open to anyone, so its fan-out to every model deployment is answered from the last
result for a moment: a flood of probes costs the deployments one health check each per window."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from router.http.api import build_api
from router.services.readiness import READY_CACHE_S, Readiness
from tests.fakes.inprocess import config, start


async def test_ready_fans_out_once_per_window(tmp_path: Any) -> None:
    calls: list[str] = []

    async def check() -> None:
        calls.append("model")

    api = start(config(tmp_path))
    api.services.readiness = Readiness({"smollm2-135m": check})
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_api(api.services)),
                                     base_url="http://in-process") as client:
            answers = await asyncio.gather(*(client.get("/ready") for _ in range(20)))
            assert {a.status_code for a in answers} == {200}
            assert calls == ["model"]
            await asyncio.sleep(READY_CACHE_S + 0.1)
            assert (await client.get("/ready")).status_code == 200
            assert calls == ["model", "model"]
    finally:
        await api.close()


async def test_a_failing_check_is_not_ready_and_named() -> None:
    async def down() -> None:
        raise ConnectionError

    async def up() -> None:
        return None

    ok, models = await Readiness({"a": up, "b": down}).results()
    assert (ok, models) == (False, {"a": "ok", "b": "unavailable (ConnectionError)"})
