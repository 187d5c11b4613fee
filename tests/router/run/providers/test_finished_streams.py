"""The hosted adapters on streams that end badly after the answer finished: a finish without a
usage report, and a connection that drops after the finish (OpenAI's finish_reason, Anthropic's
message_delta) but before the stream's proper end. A finished answer is finished."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from core.config import HostedProviderConfig
from core.generation import Delta, GenerationParams
from router.run.providers.anthropic import AnthropicProvider
from router.run.providers.openai import OpenAIProvider
from tests.fakes import FakeOpenAI, Reply
from tests.fakes.inprocess import config, start
from tests.router.run.providers.test_hosted import openai_provider, opened

PARAMS = GenerationParams(messages=[{"role": "user", "content": "What is six times seven?"}],
                          max_tokens=20)


class DroppingServer:
    """Answers every POST with `frames` as a chunked SSE body, then drops the connection without
    the body's last chunk: the client sees a broken transfer, not an end."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> DroppingServer:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return self

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for frame in self.frames:
            writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        await writer.drain()
        writer.transport.abort()  # no terminating chunk: the connection is reset

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest_asyncio.fixture(loop_scope="function")
async def dropping() -> AsyncIterator[list[DroppingServer]]:
    servers: list[DroppingServer] = []
    yield servers
    for server in servers:
        await server.close()


def openai_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n".encode()


def anthropic_event(kind: str, **data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


async def collect(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [delta async for delta in stream]


async def test_openai_finished_without_a_usage_report_says_so(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply("The answer is 42.", usage=False))
    deltas = await collect(openai_provider(fake_openai).stream("gpt-4o-mini", PARAMS))
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage is None  # not a count of zero: the router bills an estimate


async def test_openai_dropped_after_its_finish_reason_is_finished(
        dropping: list[DroppingServer]) -> None:
    server = await DroppingServer([openai_chunk({"content": word}) for word in
                                   ("The", " answer", " is", " 42.")]
                                  + [openai_chunk({}, "stop")]).start()
    dropping.append(server)
    provider = opened(OpenAIProvider.from_env(HostedProviderConfig(base_url=f"{server.url}/v1"),
                                              {"OPENAI_API_KEY": "k"}))
    deltas = await collect(provider.stream("gpt-4o-mini", PARAMS))
    assert "".join(d.text for d in deltas) == "The answer is 42."
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is None


async def test_anthropic_dropped_after_its_message_delta_is_finished(
        dropping: list[DroppingServer]) -> None:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 12, "output_tokens": 1}}
    server = await DroppingServer([
        anthropic_event("message_start", message=message),
        anthropic_event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        anthropic_event("content_block_delta", index=0,
                        delta={"type": "text_delta", "text": "The answer is 42."}),
        anthropic_event("content_block_stop", index=0),
        anthropic_event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
                        usage={"output_tokens": 6}),
    ]).start()
    dropping.append(server)
    provider = opened(AnthropicProvider.from_env(HostedProviderConfig(base_url=server.url),
                                                 {"ANTHROPIC_API_KEY": "k"}))
    deltas = await collect(provider.stream("claude-3-5-haiku-latest", PARAMS))
    assert "".join(d.text for d in deltas) == "The answer is 42."
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage is not None and deltas[-1].usage.prompt_tokens == 12


async def test_a_finished_answer_whose_connection_drops_is_answered_once_and_billed_estimated(
        dropping: list[DroppingServer], tmp_path: Any) -> None:
    """The review's reproduction: no "continuation" by another model, one estimated charge."""
    server = await DroppingServer([openai_chunk({"content": word}) for word in
                                   ("The", " answer", " is", " 42.")]
                                  + [openai_chunk({}, "stop")]).start()
    dropping.append(server)
    provider = opened(OpenAIProvider.from_env(HostedProviderConfig(base_url=f"{server.url}/v1"),
                                              {"OPENAI_API_KEY": "k"}))
    api = start(config(tmp_path), providers={"openai": provider})
    try:
        body = {"model": "gpt-4o-mini", "max_tokens": 50, "user": "u1",
                "messages": [{"role": "user", "content": "What is six times seven? " * 40}]}
        response = await api.post("/v1/chat/completions", body)
        streamed = await api.post("/v1/chat/completions", {**body, "stream": True})
        assert response.status_code == streamed.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "The answer is 42."
        assert "fallback" not in streamed.text and api.engine.generations == 0
        records = await api.records("u1")
        assert [(r["usage_source"], r["fallback_path"]) for r in records] == \
            [("estimated", None)] * 2
        assert all(r["cost_usd"] > 0 and r["input_tokens"] > 200 for r in records)
    finally:
        await api.close()
