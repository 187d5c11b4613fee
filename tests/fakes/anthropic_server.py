"""Fake Anthropic: /v1/messages, JSON and SSE (`event:` + `data:` lines, Anthropic's event order)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeProvider, Fault, Reply, pieces, respond, sse, streaming, words

STOP = {"stop": "end_turn", "length": "max_tokens"}


def _error(status: int) -> dict[str, Any]:
    kinds = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}
    return {"type": "error",
            "error": {"type": kinds.get(status, "api_error"), "message": f"fake failure {status}"}}


def _prompt_tokens(body: dict[str, Any]) -> int:
    system = words(str(body.get("system", "")))
    return system + sum(words(str(m.get("content", ""))) for m in body.get("messages", []))


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


class FakeAnthropic(FakeProvider):
    def routes(self) -> list[Route]:
        return [Route("/v1/messages", self.messages, methods=["POST"])]

    async def messages(self, request: Request) -> Response:
        body = await self.record(request)
        behaviour = self.next_behaviour()
        fault = behaviour if isinstance(behaviour, Fault) else None
        reply = behaviour if isinstance(behaviour, Reply) else Reply()
        input_tokens = reply.prompt_tokens or _prompt_tokens(body)
        output_tokens = reply.completion_tokens or words(reply.text)
        message = {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
                   "model": body["model"], "stop_sequence": None}
        tool = (body.get("tool_choice") or {}).get("name")  # a forced tool: answer with its input
        block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex}", "name": tool, "input": {}} \
            if tool else {"type": "text", "text": ""}
        delta_type, delta_key = ("input_json_delta", "partial_json") if tool else ("text_delta", "text")
        stop = "tool_use" if tool else STOP[reply.finish_reason]
        if body.get("stream"):
            events = [
                _event("message_start", {"message": {
                    **message, "content": [], "stop_reason": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
                _event("content_block_start", {"index": 0, "content_block": block}),
                *[_event("content_block_delta", {"index": 0, "delta": {"type": delta_type, delta_key: p}})
                  for p in pieces(reply.text)],
                _event("content_block_stop", {"index": 0}),
                _event("message_delta", {"delta": {"stop_reason": stop,
                                                   "stop_sequence": None},
                                         "usage": {"output_tokens": output_tokens}}),
                _event("message_stop", {}),
            ]
            return await respond(fault, _error, lambda: streaming(
                sse(events, fault, 2, reply.chunk_delay_s)))
        return await respond(fault, _error, lambda: JSONResponse({
            **message, "content": [{**block, "input": json.loads(reply.text)} if tool
                                   else {"type": "text", "text": reply.text}],
            "stop_reason": stop,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}))
