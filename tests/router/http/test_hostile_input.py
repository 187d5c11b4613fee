"""Control characters in ids and text are a 400 that names the field, before anything runs or is
recorded: a NUL cannot be stored by PostgreSQL, and ids with control characters are never wanted.
Text may hold tab, newline and carriage return."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes.inprocess import InProcess

HELLO = [{"role": "user", "content": "Hello there"}]
CHAT = {"model": "smollm2-135m", "messages": HELLO}
SEED_EMBED = {"texts": ["cells"]}
CONTENT = {"content": "Cells divide.", "content_type": "summary", "stream": False}
RESPONSES = {"model": "smollm2-135m", "input": "Hello there"}
COMPLETIONS = {"model": "smollm2-135m", "prompt": "Once"}
HOSTILE = ["bad\x00user", "tab\tuser", "line\nbreak", "esc\x1b[0m", "del\x7f", "c1\x85"]

CASES = [
    ("/v1/chat/completions", {**CHAT, "user": "{}"}, "user"),
    ("/v1/chat/completions", {**CHAT, "model": "{}"}, "model"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "x", "name": "{}"}]},
     "messages.0.name"),
    ("/v1/embeddings", {"input": "cells", "model": "all-minilm-l6-v2", "user": "{}"}, "user"),
    ("/api/v1/ai/embeddings", {**SEED_EMBED, "user_id": "{}"}, "user_id"),
    ("/api/v1/ai/embeddings", {**SEED_EMBED, "model": "{}"}, "model"),
    ("/api/v1/ai/generate-content", {**CONTENT, "user_id": "{}"}, "user_id"),
    ("/api/v1/ai/generate-content", {**CONTENT, "model": "{}"}, "model"),
    ("/v1/responses", {**RESPONSES, "user": "{}"}, "user"),
    ("/v1/responses", {**RESPONSES, "model": "{}"}, "model"),
    ("/v1/completions", {**COMPLETIONS, "user": "{}"}, "user"),
]
TEXT_CASES = [
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "a{}b"}]},
     "messages.0.content", "content"),
    ("/v1/chat/completions", {**CHAT, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a{}b"}]}]}, "messages.0.content",
     "content.0.text"),
    ("/v1/chat/completions", {**CHAT, "stop": ["a{}"]}, "stop", "stop.0"),
    ("/v1/embeddings", {"input": ["ok", "a{}"], "model": "all-minilm-l6-v2"}, "input", "input.1"),
    ("/api/v1/ai/embeddings", {"texts": ["a{}"]}, "texts", "texts.0"),
    ("/api/v1/ai/generate-content", {**CONTENT, "content": "a{}"}, "content", "content"),
    ("/api/v1/ai/generate-content", {**CONTENT, "user_profile": {"interests": ["a{}"]}},
     "user_profile", "user_profile.interests.0"),
    ("/v1/responses", {**RESPONSES, "input": "a{}"}, "input", "input"),
    ("/v1/responses", {**RESPONSES, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "a{}"}]}]}, "input", "input.0.content.0.text"),
    ("/v1/responses", {**RESPONSES, "instructions": "a{}"}, "instructions", "instructions"),
    ("/v1/completions", {**COMPLETIONS, "prompt": ["a{}"]}, "prompt", "prompt.0"),
]


async def send(api: InProcess, path: str, body: dict[str, Any]) -> Any:
    """The body as JSON escapes (\\u0000, \\ud800), as a JavaScript client sends them."""
    return await api.client.post(path, content=json.dumps(body),
                                 headers={"content-type": "application/json"})


def filled(body: dict[str, Any], value: str) -> dict[str, Any]:
    def fill(item: Any) -> Any:
        if isinstance(item, str):
            return item.replace("{}", value)
        if isinstance(item, dict):
            return {k: fill(v) for k, v in item.items()}
        if isinstance(item, list):
            return [fill(v) for v in item]
        return item
    return fill(body)


@pytest.mark.parametrize("value", HOSTILE, ids=[ascii(v) for v in HOSTILE])
@pytest.mark.parametrize(("path", "body", "field"), CASES,
                         ids=[f"{p.rsplit('/', 1)[-1]}:{f}" for p, _, f in CASES])
async def test_an_id_with_a_control_character_is_a_400_naming_it(
        api: InProcess, path: str, body: dict[str, Any], field: str, value: str) -> None:
    response = await send(api, path, filled(body, value))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert "control characters" in error["message"]
    assert await api.records() == []


@pytest.mark.parametrize(("path", "body", "param", "field"), TEXT_CASES,
                         ids=[f"{p.rsplit('/', 1)[-1]}:{f}" for p, _, _, f in TEXT_CASES])
async def test_text_with_a_nul_or_an_escape_is_a_400_naming_where(
        api: InProcess, path: str, body: dict[str, Any], param: str | None, field: str) -> None:
    for value in ("\x00", "\x1b"):
        response = await send(api, path, filled(body, value))
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param
        assert f"{field} has U+{ord(value):04X} (a control character) at position " \
            in error["message"]
    assert await api.records() == []


@pytest.mark.parametrize(("path", "body", "field"), CASES[:1] + [(p, b, f) for p, b, _, f in
                                                               TEXT_CASES[:1]])
async def test_a_lone_surrogate_is_a_400_naming_the_field(api: InProcess, path: str,
                                                          body: dict[str, Any], field: str) -> None:
    response = await send(api, path, filled(body, "\ud800"))
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["message"]


async def test_text_may_hold_tabs_and_line_breaks(api: InProcess) -> None:
    response = await api.post("/v1/chat/completions", {
        **CHAT, "messages": [{"role": "user", "content": "line one\r\n\tline two"}]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("header", ["X-Request-Id", "Idempotency-Key"])
@pytest.mark.parametrize("value", [b"req\x00id", b"req\x01", b"tab\tid", b"sp ace", b"caf\xc3\xa9",
                                   b"x" * 129], ids=lambda v: ascii(v[:12]))
async def test_a_request_id_header_with_anything_but_visible_ascii_is_a_400(
        api: InProcess, header: str, value: bytes) -> None:
    response = await api.client.post("/v1/chat/completions", json={**CHAT, "user": "hdr"},
                                     headers=[(header.encode(), value)])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == header and "visible ASCII" in error["message"]
    assert await api.records() == []


async def test_a_plain_request_id_is_recorded_as_sent(api: InProcess) -> None:
    response = await api.post("/v1/chat/completions", {**CHAT, "user": "hdr"},
                              headers={"X-Request-Id": "req-7f3a:retry/1"})
    assert response.status_code == 200
    (record,) = await api.records("hdr")
    assert record["request_id"] == "req-7f3a:retry/1" and record["id"] != record["request_id"]
