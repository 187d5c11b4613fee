"""An OpenAI-compatible upstream for the hot-path benchmark: `/v1/chat/completions` that spends a
fixed time per token whether it streams or not (5 ms by default), in its own process.

    .venv/bin/python benchmarks/_upstream.py PORT [SECONDS_PER_TOKEN]"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SENTENCE = ("Spaced repetition beats cramming: review each card a little later every time you "
            "get it right, and sooner when you miss it.")
WORDS = SENTENCE.split()
PER_TOKEN_S = float(sys.argv[2]) if len(sys.argv) > 2 else 0.005


def tokens(body: dict[str, object]) -> list[str]:
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or 16
    count = int(limit) if isinstance(limit, int) else 16
    return [(" " if i else "") + WORDS[i % len(WORDS)] for i in range(count)]


async def chat(request: Request) -> Response:
    body = await request.json()
    words = tokens(body)
    ident, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body["model"]
    usage = {"prompt_tokens": 12, "completion_tokens": len(words),
             "total_tokens": 12 + len(words)}
    if not body.get("stream"):
        await asyncio.sleep(PER_TOKEN_S * len(words))
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "finish_reason": "length", "logprobs": None, "message": {
                "role": "assistant", "content": "".join(words), "refusal": None}}],
            "usage": usage})

    def chunk(delta: dict[str, object], finish: str | None = None,
              with_usage: bool = False) -> bytes:
        data = {"id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [] if with_usage else [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if with_usage:
            data["usage"] = usage
        return f"data: {json.dumps(data)}\n\n".encode()

    async def frames() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        for word in words:
            await asyncio.sleep(PER_TOKEN_S)
            yield chunk({"content": word})
        yield chunk({}, "length")
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            yield chunk({}, with_usage=True)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream")


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                lifespan="off", access_log=False)
