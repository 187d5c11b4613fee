"""Fake OpenAI: /v1/chat/completions (JSON and SSE, text and tool calls), /v1/completions (JSON and
SSE), /v1/embeddings (float and
base64)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import (
    FakeProvider,
    Fault,
    Reply,
    json_pieces,
    pieces,
    respond,
    sse,
    streaming,
    words,
)
from tests.fakes.caching import InvoiceLine, OpenAICache


def _error(status: int) -> dict[str, Any]:
    kinds = {401: "invalid_request_error", 429: "rate_limit_error"}
    return {"error": {"message": f"fake failure {status}", "type": kinds.get(status, "server_error"),
                      "param": None, "code": None}}


def _message(reply: Reply) -> dict[str, Any]:
    content = reply.text if reply.text or not reply.tool_calls else None
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [{"id": c.id, "type": "function", "function": {
            "name": c.name, "arguments": c.arguments}} for c in reply.tool_calls]
    return message


def _prompt(body: dict[str, Any]) -> list[str]:
    """The prompt's tokens (words), in order."""
    return [w for m in body.get("messages", []) for w in str(m.get("content", "")).split()]


def _usage(prompt: int, completion: int, cached: int, reasoning: int) -> dict[str, Any]:
    """OpenAI's usage object: prompt_tokens include the cached ones, completion_tokens the
    reasoning ones."""
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def fake_vector(text: str, dims: int) -> list[float]:
    """Deterministic unit vector per text."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [((seed[i % 32] + i * 7) % 251) / 125.0 - 1.0 for i in range(dims)]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    return [v / norm for v in raw]


@dataclass
class FakeOpenAI(FakeProvider):
    cache: OpenAICache = field(default_factory=OpenAICache)

    def forget_cache(self) -> None:
        self.cache.entries.clear()

    def _bill(self, body: dict[str, Any], reply: Reply, prompt: list[str],
              completion: int) -> dict[str, Any]:
        """The request's usage, as OpenAI reports it, and its line on the fake's invoice. A scripted
        prompt_tokens is reported as it is, uncached."""
        cached = 0 if reply.prompt_tokens else self.cache.use(prompt, body.get("prompt_cache_key"))
        tokens = reply.prompt_tokens or len(prompt)
        self.invoice.append(InvoiceLine(body["model"], tokens - cached, cache_read=cached,
                                        output=completion, reasoning=reply.reasoning_tokens))
        return _usage(tokens, completion, cached, reply.reasoning_tokens)

    def routes(self) -> list[Route]:
        return [Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"])]

    async def chat(self, request: Request) -> Response:
        body = await self.record(request)
        behaviour = self.next_behaviour()
        fault = behaviour if isinstance(behaviour, Fault) else None
        reply = behaviour if isinstance(behaviour, Reply) else Reply()
        completion = (reply.completion_tokens or reply.output_words()) + reply.reasoning_tokens
        usage = self._bill(body, reply, _prompt(body), completion)
        if body.get("stream"):
            return await respond(fault, _error, lambda: streaming(
                sse(self._events(body, reply, usage), fault, 1, reply.chunk_delay_s)))
        return await respond(fault, _error, lambda: JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": body["model"], "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "logprobs": None, "finish_reason": reply.finish(),
                         "message": _message(reply)}],
            "usage": usage}))

    def _events(self, body: dict[str, Any], reply: Reply, usage: dict[str, Any]) -> list[bytes]:
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"]}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode()

        only_calls = reply.tool_calls and not reply.text
        events = [chunk({"role": "assistant", "content": None if only_calls else "",
                         "refusal": None})]
        events += [chunk({"content": piece}) for piece in pieces(reply.text) if not only_calls]
        for index, call in enumerate(reply.tool_calls):  # a call's first chunk names it
            events.append(chunk({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                                 "function": {"name": call.name, "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                       for piece in json_pieces(call.arguments)]
        events.append(chunk({}, reply.finish()))
        if (body.get("stream_options") or {}).get("include_usage") and reply.usage:
            events.append(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        events.append(b"data: [DONE]\n\n")
        return events

    async def completions(self, request: Request) -> Response:
        """Legacy text completions: `text_completion` objects, streamed or not."""
        body = await self.record(request)
        behaviour = self.next_behaviour()
        fault = behaviour if isinstance(behaviour, Fault) else None
        reply = behaviour if isinstance(behaviour, Reply) else Reply()
        usage = self._bill(body, reply, str(body["prompt"]).split(),
                           reply.completion_tokens or words(reply.text))
        base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": body["model"]}

        def completion(text: str, finish: str | None, **extra: Any) -> dict[str, Any]:
            return {**base, "choices": [{"text": text, "index": 0, "logprobs": None,
                                         "finish_reason": finish}], **extra}

        if not body.get("stream"):
            return await respond(fault, _error, lambda: JSONResponse(
                completion(reply.text, reply.finish(), usage=usage)))
        chunks = [completion(piece, None) for piece in pieces(reply.text)]
        chunks.append(completion("", reply.finish()))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": usage})
        frames = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks]
        return await respond(fault, _error, lambda: streaming(
            sse([*frames, b"data: [DONE]\n\n"], fault, 0, reply.chunk_delay_s)))

    async def embeddings(self, request: Request) -> Response:
        body = await self.record(request)
        behaviour = self.next_behaviour()
        fault = behaviour if isinstance(behaviour, Fault) else None
        reply = behaviour if isinstance(behaviour, Reply) else Reply()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions") or 1536)

        def encode(vector: list[float]) -> Any:
            if body.get("encoding_format") == "base64":
                return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            return vector

        tokens = sum(words(str(text)) for text in inputs)
        usage = {"usage": {"prompt_tokens": tokens, "total_tokens": tokens}} if reply.usage else {}
        return await respond(fault, _error, lambda: JSONResponse({
            "object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": i, "embedding": encode(fake_vector(str(t), dims))}
                     for i, t in enumerate(inputs)], **usage}))
