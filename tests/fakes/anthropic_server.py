"""Fake Anthropic: /v1/messages, JSON and SSE (`event:` + `data:` lines, Anthropic's event order),
text and tool_use blocks."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import (
    Call,
    FakeProvider,
    Fault,
    Reply,
    json_pieces,
    pieces,
    respond,
    sse,
    streaming,
)
from tests.fakes.caching import (
    AnthropicCache,
    AnthropicUse,
    InvoiceLine,
    anthropic_minimum,
    anthropic_segments,
)

STOP = {"stop": "end_turn", "length": "max_tokens"}


def _error(status: int) -> dict[str, Any]:
    kinds = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}
    return {"type": "error",
            "error": {"type": kinds.get(status, "api_error"), "message": f"fake failure {status}"}}


def _usage(use: AnthropicUse, input_tokens: int, output_tokens: int,
           thinking: int) -> dict[str, Any]:
    """Anthropic's usage object: input_tokens exclude the cache's reads and writes."""
    usage: dict[str, Any] = {
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "cache_read_input_tokens": use.read,
        "cache_creation_input_tokens": use.written_5m + use.written_1h,
        "cache_creation": {"ephemeral_5m_input_tokens": use.written_5m,
                           "ephemeral_1h_input_tokens": use.written_1h}}
    if thinking:
        usage["output_tokens_details"] = {"thinking_tokens": thinking}
    return usage


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


@dataclass
class FakeAnthropic(FakeProvider):
    cache: AnthropicCache = field(default_factory=AnthropicCache)

    def forget_cache(self) -> None:
        self.cache.entries.clear()

    def _bill(self, body: dict[str, Any], reply: Reply, output_tokens: int) -> dict[str, Any]:
        """The request's usage, as Anthropic reports it, and its line on the fake's invoice. A
        scripted prompt_tokens is reported as it is, uncached."""
        segments = anthropic_segments(body)
        use = AnthropicUse() if reply.prompt_tokens else self.cache.use(
            segments, anthropic_minimum(body["model"]))
        total = reply.prompt_tokens or sum(len(s.tokens) for s in segments)
        input_tokens = total - use.read - use.written_5m - use.written_1h
        self.invoice.append(InvoiceLine(body["model"], input_tokens, use.read, use.written_5m,
                                        use.written_1h, output_tokens, reply.reasoning_tokens))
        return _usage(use, input_tokens, output_tokens, reply.reasoning_tokens)

    def routes(self) -> list[Route]:
        return [Route("/v1/messages", self.messages, methods=["POST"])]

    async def messages(self, request: Request) -> Response:
        body = await self.record(request)
        behaviour = self.next_behaviour()
        fault = behaviour if isinstance(behaviour, Fault) else None
        reply = behaviour if isinstance(behaviour, Reply) else Reply()
        output_tokens = (reply.completion_tokens or reply.output_words()) + reply.reasoning_tokens
        usage = self._bill(body, reply, output_tokens)
        message = {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
                   "model": body["model"], "stop_sequence": None}
        blocks = _blocks(reply, (body.get("tool_choice") or {}).get("name"))
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) \
            else STOP[reply.finish()]
        if body.get("stream"):
            events = [
                _event("message_start", {"message": {
                    **message, "content": [], "stop_reason": None,
                    "usage": {**usage, "output_tokens": 1}}}),
                *[frame for index, block in enumerate(blocks) for frame in _streamed(index, block)],
                _event("message_delta", {"delta": {"stop_reason": stop,
                                                   "stop_sequence": None},
                                         "usage": usage}),  # cumulative, as Anthropic sends
                _event("message_stop", {}),
            ]
            return await respond(fault, _error, lambda: streaming(
                sse(events, fault, 2, reply.chunk_delay_s)))
        return await respond(fault, _error, lambda: JSONResponse({
            **message, "content": blocks, "stop_reason": stop,
            "usage": usage}))


def _blocks(reply: Reply, forced: str | None) -> list[dict[str, Any]]:
    """The answer's content blocks: its text, then a tool_use block per call. A forced tool with no
    scripted calls (structured output) answers with `text` as the tool's input."""
    if forced and not reply.tool_calls:
        return [_tool_use(Call(forced, reply.text))]
    text = [{"type": "text", "text": reply.text}] if reply.text or not reply.tool_calls else []
    return [*text, *(_tool_use(c) for c in reply.tool_calls)]


def _tool_use(call: Call) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id.replace("call_", "toolu_"), "name": call.name,
            "input": json.loads(call.arguments)}


def _streamed(index: int, block: dict[str, Any]) -> list[bytes]:
    """A block's events: its start (a tool_use with empty input), its deltas, its stop. The first
    block's first delta is where `Fault.cut_after` counts from."""
    if block["type"] == "text":
        start, deltas = {"type": "text", "text": ""}, [
            {"type": "text_delta", "text": p} for p in pieces(block["text"])]
    else:
        start, deltas = {**block, "input": {}}, [
            {"type": "input_json_delta", "partial_json": p}
            for p in json_pieces(json.dumps(block["input"]))]
    return [_event("content_block_start", {"index": index, "content_block": start}),
            *[_event("content_block_delta", {"index": index, "delta": d}) for d in deltas],
            _event("content_block_stop", {"index": index})]
