"""The framework's floor for the hot path: a Ray Serve deployment behind the same ingress that
forwards a request's body to the upstream and streams the upstream's bytes back untouched. No
FastAPI, auth, accounting, parsing, policy or fallback: what any Serve app pays per request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from ray import serve
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=512)
class PassThrough:
    def __init__(self, upstream: str):
        self._url = f"{upstream}/chat/completions"
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, request: Request) -> Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        upstream = await self._session.post(self._url, data=await request.body(), headers={
            "content-type": "application/json", "authorization": "Bearer sk-bench"})

        async def relay() -> AsyncIterator[bytes]:
            async for chunk in upstream.content.iter_any():
                yield chunk
            upstream.release()

        return StreamingResponse(relay(), status_code=upstream.status,
                                 media_type=upstream.headers.get("content-type"))
