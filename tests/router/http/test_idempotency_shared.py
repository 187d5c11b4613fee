"""Idempotency-Key across router replicas: with Redis configured, two in-process apps (two
replicas) share the entries, so a retry that lands on the other replica is replayed, a repeat while
the first runs is a 409 there too, and a failure is kept by neither."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from core.errors import ProviderError
from tests.conftest import RedisServer
from tests.fakes.inprocess import InProcess, config, start
from tests.fakes.scripted import Hang, Say
from tests.ports import free_port

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}],
        "user": "idem-shared"}


@pytest_asyncio.fixture(loop_scope="function")
async def replicas(tmp_path: Any, own_redis: RedisServer) -> AsyncIterator[list[InProcess]]:
    apps = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        apps.append(start(config(tmp_path / name, redis_url=own_redis.url)))
    yield apps
    for app in apps:
        await app.close()


def keyed() -> dict[str, str]:
    return {"Idempotency-Key": f"shared-{uuid.uuid4().hex}"}


async def test_a_retry_on_another_replica_is_replayed(replicas: list[InProcess]) -> None:
    a, b = replicas
    headers = keyed()
    for body in (CHAT, {**CHAT, "stream": True}):
        first = await a.post("/v1/chat/completions", body, headers=headers)
        retry = await b.post("/v1/chat/completions", body, headers=headers)
        assert retry.status_code == first.status_code == 200
        assert retry.headers["idempotent-replayed"] == "true" and retry.text == first.text
        assert b.openai.calls == [] and await b.records("idem-shared") == []
        headers = keyed()


async def test_a_repeat_on_another_replica_while_the_first_runs_is_a_409(
        replicas: list[InProcess]) -> None:
    a, b = replicas
    headers = keyed()
    a.openai.enqueue(Hang())
    first = asyncio.create_task(a.post("/v1/chat/completions", CHAT, headers=headers))
    await asyncio.sleep(0.3)
    second = await b.post("/v1/chat/completions", CHAT, headers=headers)
    assert second.status_code == 409
    assert (await first).status_code == 200
    other = await b.post("/v1/chat/completions", {**CHAT, "user": "someone-else"}, headers=headers)
    assert other.status_code == 422


async def test_a_failure_on_one_replica_leaves_the_retry_to_run_on_another(
        replicas: list[InProcess]) -> None:
    a, b = replicas
    headers = keyed()
    down = ProviderError("HTTP 503", provider="openai", model="gpt-4o", upstream_status=503)
    a.openai.default = a.anthropic.default = down
    body = {**CHAT, "model": "large"}  # no local model serves the large tier here
    assert (await a.post("/v1/chat/completions", body, headers=headers)).status_code == 503
    b.openai.default = b.anthropic.default = Say()
    retry = await b.post("/v1/chat/completions", body, headers=headers)
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers


async def test_while_redis_does_not_answer_keyed_requests_run_as_if_unkeyed(tmp_path: Any) -> None:
    api = start(config(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        headers = keyed()
        responses = [await api.post("/v1/chat/completions", CHAT, headers=headers)
                     for _ in range(2)]
        assert [r.status_code for r in responses] == [200, 200]
        assert all("idempotent-replayed" not in r.headers for r in responses)
    finally:
        await api.close()
