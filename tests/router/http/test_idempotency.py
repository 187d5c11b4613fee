"""Idempotency-Key: a retry of a request that succeeded gets the same response, without a second run
or ledger record; keys are scoped to the calling API key; a key still running is a 409, a key reused
for another request a 422; a request that did not succeed keeps nothing, so its retry runs."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

from core.errors import ProviderError
from router.http.idempotency_stores import MemoryStore, Response
from tests.fakes.inprocess import ADMIN_KEY, InProcess, config, start
from tests.fakes.scripted import Cut, Hang, Say

HELLO = [{"role": "user", "content": "Hello there"}]
CHAT = {"model": "gpt-4o-mini", "messages": HELLO, "user": "idem"}


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **headers}


async def test_a_retry_gets_the_first_response_without_running_or_recording_again(
        api: InProcess) -> None:
    api.openai.enqueue(Say("first answer"), Say("second answer"))
    first = await api.post("/v1/chat/completions", CHAT, headers=keyed("order-1"))
    retry = await api.post("/v1/chat/completions", CHAT, headers=keyed("order-1"))
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert len(api.openai.calls) == 1
    (record,) = await api.records("idem")
    assert record["idempotency_key"] == "order-1"


async def test_a_streamed_response_is_replayed_whole(api: InProcess) -> None:
    body = {**CHAT, "stream": True}
    first = await api.post("/v1/chat/completions", body, headers=keyed("stream-1"))
    retry = await api.post("/v1/chat/completions", body, headers=keyed("stream-1"))
    assert retry.text == first.text and retry.text.endswith("data: [DONE]\n\n")
    assert len(api.openai.calls) == 1


async def test_keys_are_scoped_to_the_calling_api_key(api: InProcess) -> None:
    await api.post("/v1/chat/completions", CHAT, headers=keyed("shared-name"))
    other = await api.post("/v1/chat/completions", CHAT,
                           headers=keyed("shared-name", **{"X-API-Key": ADMIN_KEY}))
    assert other.status_code == 200 and "idempotent-replayed" not in other.headers
    assert len(api.openai.calls) == 2


async def test_a_key_reused_for_another_request_is_a_422(api: InProcess) -> None:
    await api.post("/v1/chat/completions", CHAT, headers=keyed("k-2"))
    other = await api.post("/v1/chat/completions", {**CHAT, "user": "someone-else"},
                           headers=keyed("k-2"))
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"


async def test_a_key_still_running_is_a_409_with_retry_after(api: InProcess) -> None:
    api.openai.enqueue(Hang())  # the first attempt hangs until its first-token limit, then falls back
    first = asyncio.create_task(api.post("/v1/chat/completions", CHAT, headers=keyed("slow")))
    await asyncio.sleep(0.2)
    second = await api.post("/v1/chat/completions", CHAT, headers=keyed("slow"))
    assert second.status_code == 409 and second.headers["retry-after"] == "1"
    assert second.json()["error"]["code"] == "idempotency_key_in_use"
    assert (await first).status_code == 200


async def test_a_request_that_failed_keeps_nothing_so_its_retry_runs(api: InProcess) -> None:
    down = ProviderError("HTTP 503", provider="openai", model="gpt-4o", upstream_status=503)
    body = {**CHAT, "model": "large"}  # no local model serves the large tier here
    api.openai.default = api.anthropic.default = down
    failed = await api.post("/v1/chat/completions", body, headers=keyed("k-3"))
    assert failed.status_code == 503
    api.openai.default = api.anthropic.default = Say()
    retry = await api.post("/v1/chat/completions", body, headers=keyed("k-3"))
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers


async def test_a_stream_that_ended_with_an_error_is_not_kept(tmp_path: Any) -> None:
    """Its 200 ends with an error event: the retry runs instead of replaying the failure."""
    api = start(config(tmp_path, router={"enable_fallback": False}))
    try:
        api.openai.enqueue(Cut("The answer "), Cut("The answer "))  # the attempt and its retry
        body = {**CHAT, "stream": True}
        failed = await api.post("/v1/chat/completions", body, headers=keyed("retry-me-1"))
        assert failed.status_code == 200 and "all_providers_failed" in failed.text
        retry = await api.post("/v1/chat/completions", body, headers=keyed("retry-me-1"))
        assert "idempotent-replayed" not in retry.headers
        assert "error" not in retry.text and len(api.openai.calls) == 3
    finally:
        await api.close()


async def test_a_body_refused_as_too_large_runs_nothing_and_keeps_nothing(api: InProcess) -> None:
    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield json.dumps(CHAT).encode()
        yield b" " * 200_000

    response = await api.client.post("/v1/chat/completions", content=chunked(), headers={
        "Idempotency-Key": "k-413", "Content-Type": "application/json"})
    assert response.status_code == 413
    assert api.openai.calls == [] and api.engine.generations == 0
    assert await api.records("idem") == []
    again = await api.post("/v1/chat/completions", CHAT, headers=keyed("k-413"))
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers


async def test_memory_counts_what_each_kept_entry_really_takes_and_caps_entries() -> None:
    store = MemoryStore(max_bytes=10**9, max_entries=1500)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"87")]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(1000):
        slot = ("backend", f"key-{i:06d}")
        await store.claim(slot, f"{i:064x}")
        await store.keep(slot, f"{i:064x}", Response(200, list(headers), bytearray(b"x" * 87), True))
    real = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert store.bytes >= real  # what it counts against max_bytes covers what it holds
    for i in range(1000, 2000):
        await store.claim(("backend", f"key-{i:06d}"), "f")
    assert len(store) == 1500  # the oldest dropped first
