"""The one SSE encoder. Every stream the service sends goes through `encode_stream`, which guarantees
an explicit terminal event: the stream's own end, or an error event, then `data: [DONE]`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from core.errors import ServiceError

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: don't buffer


def encode(data: BaseModel | dict[str, Any], event: str | None = None) -> bytes:
    payload = data.model_dump_json() if isinstance(data, BaseModel) \
        else json.dumps(data, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


async def encode_stream(events: AsyncIterator[BaseModel | dict[str, Any]]) -> AsyncIterator[bytes]:
    """Frame `events` as SSE. Errors raised mid-stream become an error event; always ends with [DONE]."""
    try:
        async for event in events:
            yield encode(event)
    except ServiceError as error:
        yield encode(error.body())
    except Exception:  # a bug must still end the stream visibly, not cut it
        log.exception("stream failed")
        yield encode(ServiceError("internal error while streaming").body())
    yield DONE
