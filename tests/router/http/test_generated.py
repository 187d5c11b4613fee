"""router/http/generated.py, in process: every generation route, streamed or not, answered or
refused, leaves exactly one ledger record under its Operation, and a client gone before the first
byte of a stream still leaves one, as a disconnection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from router.http.api import build_api
from router.usage.record import Operation
from tests.fakes.inprocess import KEY, LOCAL, InProcess, config, start
from tests.fakes.scripted import Hang

HELLO = [{"role": "user", "content": "Hello there"}]
ROUTES = [
    ("/v1/chat/completions", {"model": LOCAL, "messages": HELLO, "max_tokens": 8}, Operation.CHAT),
    ("/v1/completions", {"model": LOCAL, "prompt": "Once", "max_tokens": 8}, Operation.COMPLETIONS),
    ("/v1/responses", {"model": LOCAL, "input": "Hi", "max_output_tokens": 8}, Operation.RESPONSES),
    ("/api/v1/ai/generate-content", {"content": "Fractions.", "content_type": "summary",
                                     "model": LOCAL}, Operation.CONTENT),
]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(("path", "body", "operation"), ROUTES)
async def test_each_request_leaves_one_record_of_its_operation(
        api: InProcess, path: str, body: dict[str, Any], operation: Operation,
        stream: bool) -> None:
    user = f"{operation.value}-{stream}"
    who = {"user_id": user} if operation is Operation.CONTENT else {"user": user}
    response = await api.post(path, {**body, **who, "stream": stream})
    assert response.status_code == 200, response.text
    records = await api.records(user)
    assert [(r["operation"], r["outcome"], r["streamed"]) for r in records] == [
        (operation.value, "success", stream)]


@pytest.mark.parametrize(("path", "body", "operation"), ROUTES)
async def test_a_request_refused_before_any_model_leaves_one_error_record(
        api: InProcess, path: str, body: dict[str, Any], operation: Operation) -> None:
    user = f"refused-{operation.value}"
    who = {"user_id": user} if operation is Operation.CONTENT else {"user": user}
    response = await api.post(path, {**body, **who, "model": "no-such-model", "stream": True})
    assert response.status_code == 404, response.text
    assert [(r["operation"], r["status"]) for r in await api.records(user)] == [
        (operation.value, 404)]


@pytest.mark.parametrize("grace_s", [0.0, 0.2])
async def test_a_client_gone_before_the_first_byte_leaves_one_record(tmp_path: Any,
                                                                     grace_s: float) -> None:
    """Without a grace period the generation is cancelled at once; with one, once it ran out
    (router/services/runs.py: nobody came back)."""
    api = start(config(tmp_path, router={"resume": {"grace_s": grace_s}}))
    try:
        await _gone_before_the_first_byte(api, grace_s)
    finally:
        await api.close()


async def _gone_before_the_first_byte(api: InProcess, grace_s: float) -> None:
    api.anthropic.enqueue(Hang(after_words=2))  # the answer would never end by itself
    body = json.dumps({"model": "claude-3-5-haiku-latest", "messages": HELLO, "stream": True,
                       "user": "gone"}).encode()
    incoming = [{"type": "http.request", "body": body, "more_body": False},
                {"type": "http.disconnect"}]  # as soon as the response starts
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if len(incoming) > 1 else incoming[0]

    async def send(message: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # a network write: where the server sees the client gone
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "server": ("in-process", 80),
             "client": ("127.0.0.1", 1),
             "headers": [(b"x-api-key", KEY.encode()), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    await build_api(api.services)(scope, receive, send)
    assert not any(m.get("body") for m in sent if m["type"] == "http.response.body")
    await asyncio.sleep(grace_s + 0.1)
    assert [(r["outcome"], r["status"]) for r in await api.records("gone")] == [
        ("client_disconnected", 499)]
