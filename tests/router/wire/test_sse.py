"""The SSE encoder always ends a stream explicitly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from core.errors import AllProvidersFailed
from router.wire import sse
from router.wire.sse import DONE, encode, encode_stream


async def frames(events: AsyncIterator) -> list[bytes]:
    return [frame async for frame in encode_stream(events)]


def test_encode_frames_json_and_named_events() -> None:
    assert encode({"a": 1}) == b'data: {"a":1}\n\n'
    assert encode({"a": 1}, event="x") == b'event: x\ndata: {"a":1}\n\n'


async def test_a_finished_stream_ends_with_done() -> None:
    async def events():
        yield {"n": 1}

    assert await frames(events()) == [b'data: {"n":1}\n\n', DONE]


async def test_an_error_mid_stream_becomes_an_error_event_then_done() -> None:
    async def events():
        yield {"n": 1}
        raise AllProvidersFailed([("openai/gpt-4o-mini", "HTTP 503")])

    out = await frames(events())
    error = json.loads(out[1].decode()[len("data: "):])["error"]
    assert error["type"] == "service_unavailable"
    assert error["tried"] == ["openai/gpt-4o-mini"]
    assert out[-1] == DONE


async def test_a_bug_mid_stream_still_ends_visibly() -> None:
    async def events():
        yield {"n": 1}
        raise KeyError("secret internals")

    out = await frames(events())
    assert b"secret" not in out[1]
    assert b"server_error" in out[1]
    assert out[-1] == DONE


async def test_a_named_stream_frames_each_event_under_its_type_and_ends_with_its_failure() -> None:
    """OpenAI's Responses streams: `event: <type>` lines, the stream's own terminal events on
    failure, no [DONE]."""
    async def events():
        yield {"type": "response.created", "n": 1}
        raise AllProvidersFailed([("openai/gpt-4o-mini", "HTTP 503")])

    def failure(error):
        return [{"type": "error", "message": error.message}, {"type": "response.failed"}]

    out = [frame async for frame in encode_stream(events(), named=True, failure=failure,
                                                  done=False)]
    assert out[0] == b'event: response.created\ndata: {"type":"response.created","n":1}\n\n'
    assert out[1].startswith(b'event: error\ndata: {"type":"error","message":"all providers')
    assert out[2] == b'event: response.failed\ndata: {"type":"response.failed"}\n\n'
    assert len(out) == 3


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_upstream_events_are_decoded_whatever_the_chunking() -> None:
    body = b'data: {"a": 1}\n\ndata: {"b": [2]}\r\n\r\n: a comment\n\ndata: [DONE]\n\ndata: {"c": 3}\n\n'
    for size in (1, 3, 7, len(body)):
        parts = [body[i:i + size] for i in range(0, len(body), size)]
        assert [e async for e in sse.decode_json(_chunks(*parts))] == [{"a": 1}, {"b": [2]}]


async def test_a_payload_that_is_not_json_raises() -> None:
    with pytest.raises(ValueError):
        [e async for e in sse.decode_json(_chunks(b"data: {not json\n\n"))]
