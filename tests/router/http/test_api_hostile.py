"""The ledger under hostile input, end to end on PostgreSQL (the full app at /): a burst of requests
with NUL and other control characters in ids, text and the X-Request-Id / Idempotency-Key headers,
interleaved with normal requests. Every hostile request gets a 400; every normal one is recorded;
nothing reaches the dead-letter table and no write fails."""

from __future__ import annotations

import json
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.conftest import API_KEY, AUTH
from tests.router.http.test_api_accounting import records

ASK = [{"role": "user", "content": "Say hi."}]


def raw_post(url: str, path: str, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> int:
    """A POST sent byte for byte (HTTP clients refuse control characters in header values);
    the response's status."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: " + parts.netloc.encode(),
            b"Authorization: Bearer " + API_KEY.encode(), b"Content-Type: application/json",
            b"Content-Length: " + str(len(payload)).encode(), b"Connection: close",
            *(name + b": " + value for name, value in headers)]
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as conn:
        conn.sendall(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        status_line = conn.makefile("rb").readline()
    return int(status_line.split()[1])


def hostile_requests() -> list[tuple[str, Any]]:
    chat = {"model": "gpt-4o-mini", "messages": ASK, "max_tokens": 8}
    bodies = [
        ("/v1/chat/completions", {**chat, "user": "bad\x00user"}),
        ("/v1/chat/completions", {**chat, "user": "tab\tuser"}),
        ("/v1/chat/completions", {**chat, "user": "bell\x07"}),
        ("/v1/chat/completions", {**chat, "messages": [{"role": "user", "content": "a\x00b"}]}),
        ("/v1/embeddings", {"input": "cells", "model": "all-minilm-l6-v2", "user": "x\x1by"}),
        ("/api/v1/ai/embeddings", {"texts": ["cells"], "user_id": "nul\x00"}),
        ("/api/v1/ai/generate-content", {"content": "Cells", "content_type": "summary",
                                         "user_id": "c1\x85", "stream": False}),
    ]
    headers = [(b"X-Request-Id", b"req\x00id"), (b"X-Request-Id", b"req\x01id"),
               (b"X-Request-Id", b"req\x7fid"), (b"X-Request-Id", b"req\x1bid"),
               (b"Idempotency-Key", b"key\x1b")]
    return [("json", b) for b in bodies] + [("header", h) for h in headers]


def test_hostile_ids_get_400_and_every_normal_request_is_recorded(serve_url) -> None:
    who = f"burst-{uuid.uuid4().hex[:8]}"
    before = httpx.get(f"{serve_url}/api/v1/ai/usage", headers=AUTH, timeout=30).json()["ledger"]
    normal_ids = [f"normal-{n}-{uuid.uuid4().hex[:6]}" for n in range(40)]
    hostile = hostile_requests() * 3

    def send_normal(request_id: str) -> int:
        return httpx.post(f"{serve_url}/v1/chat/completions", timeout=60,
                          headers={**AUTH, "X-Request-Id": request_id},
                          json={"model": "gpt-4o-mini", "messages": ASK, "max_tokens": 8,
                                "user": who}).status_code

    def send_hostile(item: tuple[str, Any]) -> int:
        kind, what = item
        if kind == "json":
            path, body = what
            return httpx.post(f"{serve_url}{path}", content=json.dumps(body), timeout=60,
                              headers={**AUTH, "Content-Type": "application/json"}).status_code
        body = {"model": "gpt-4o-mini", "messages": ASK, "max_tokens": 8, "user": who}
        return raw_post(serve_url, "/v1/chat/completions", body, [what])

    work = [(send_normal, rid) for rid in normal_ids]
    for index, item in enumerate(hostile):  # interleaved
        work.insert(index * 2 + 1, (send_hostile, item))  # type: ignore[arg-type]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda job: (job[0] is send_normal, job[0](job[1])), work))
    assert [s for normal, s in statuses if normal] == [200] * len(normal_ids)
    assert [s for normal, s in statuses if not normal] == [400] * len(hostile)
    found = records(serve_url, who, expect=len(normal_ids), timeout=30)
    assert sorted(r["request_id"] for r in found) == sorted(normal_ids)
    after = httpx.get(f"{serve_url}/api/v1/ai/usage", headers=AUTH, timeout=30).json()["ledger"]
    assert (after["dead_lettered"], after["write_failures"], after["dropped"]) == (
        before["dead_lettered"], before["write_failures"], before["dropped"])
