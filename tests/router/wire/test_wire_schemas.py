"""Every body and stream chunk the OpenAI-compatible API sends validates against OpenAI's own
published schemas (tests/openai_schemas.py): chat completions, streamed and not, from each provider
(the local engine, and OpenAI and Anthropic through their real adapters and SDKs on the wire fakes),
embeddings as floats and as base64, the model list, and errors. In process: milliseconds a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from core.config import HostedProviderConfig
from router.run.providers.anthropic import AnthropicProvider
from router.run.providers.openai import OpenAIProvider
from tests.conftest import ANTHROPIC_KEY, OPENAI_KEY
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.fakes.base import Fault
from tests.fakes.inprocess import LOCAL, InProcess, config, start
from tests.openai_schemas import check, check_embeddings, sse_data

MODELS = {"local": LOCAL, "openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}
HELLO = [{"role": "user", "content": "Explain fractions in one sentence."}]


@pytest_asyncio.fixture(loop_scope="function")
async def wire(tmp_path: Any, fake_openai: FakeOpenAI,
               fake_anthropic: FakeAnthropic) -> AsyncIterator[InProcess]:
    keys = {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    openai = OpenAIProvider.from_env(HostedProviderConfig(base_url=f"{fake_openai.url}/v1"), keys)
    anthropic = AnthropicProvider.from_env(HostedProviderConfig(base_url=fake_anthropic.url), keys)
    app_config = config(tmp_path, router={"providers": {
        "openai": {"base_url": f"{fake_openai.url}/v1"}}})  # the Embedder's OpenAI client
    running = start(app_config, providers={"openai": openai, "anthropic": anthropic})
    yield running
    await running.close()


@pytest.mark.parametrize("provider", MODELS)
async def test_a_chat_completion_is_openais_shape(wire: InProcess, provider: str) -> None:
    response = await wire.post("/v1/chat/completions", {"model": MODELS[provider], "messages": HELLO})
    assert response.status_code == 200, response.text
    body = response.json()
    check("CreateChatCompletionResponse", body)
    assert body["choices"][0]["logprobs"] is None and body["choices"][0]["message"]["refusal"] is None
    assert body["route"]["provider"] == provider  # our extension stays, as the schema allows


@pytest.mark.parametrize("provider", MODELS)
@pytest.mark.parametrize("include_usage", [False, True])
async def test_every_stream_chunk_is_openais_shape(wire: InProcess, provider: str,
                                                   include_usage: bool) -> None:
    response = await wire.post("/v1/chat/completions", {
        "model": MODELS[provider], "messages": HELLO, "stream": True,
        "stream_options": {"include_usage": include_usage}})
    assert response.status_code == 200, response.text
    chunks = sse_data(response.text)
    for chunk in chunks:
        check("CreateChatCompletionStreamResponse", chunk)
    choices = [choice for chunk in chunks for choice in chunk["choices"]]
    assert [c["finish_reason"] for c in choices[:-1]] == [None] * (len(choices) - 1)
    assert choices[-1]["finish_reason"] == "stop"
    assert ("usage" in chunks[-1]) is include_usage


@pytest.mark.parametrize("encoding", ["float", "base64"])
@pytest.mark.parametrize(("model", "dims"), [("all-minilm-l6-v2", 384),
                                             ("text-embedding-3-small", 1536)])
async def test_embeddings_are_openais_shape(wire: InProcess, encoding: str, model: str,
                                            dims: int) -> None:
    response = await wire.post("/v1/embeddings", {"model": model, "input": ["one", "two"],
                                                  "encoding_format": encoding})
    assert response.status_code == 200, response.text
    floats = await wire.post("/v1/embeddings", {"model": model, "input": ["one", "two"]})
    vectors = check_embeddings(response.json(), dims)
    assert np.allclose(vectors, check_embeddings(floats.json(), dims), atol=1e-6)


async def test_the_model_list_is_openais_shape(wire: InProcess) -> None:
    response = await wire.client.get("/v1/models")
    check("ListModelsResponse", response.json())
    assert {m["id"] for m in response.json()["data"]} >= set(MODELS.values())


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/v1/chat/completions", {"model": "gpt-4o-mini"}, 400),
    ("POST", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, "n": 2}, 400),
    ("POST", "/v1/chat/completions", {"model": "no-such-model", "messages": HELLO}, 404),
    ("POST", "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "x" * 33_000}, 422),
    ("GET", "/v1/chat/completions", None, 405),
    ("GET", "/v1/no-such-route", None, 404),
])
async def test_errors_are_openais_shape(wire: InProcess, method: str, path: str,
                                        body: dict[str, Any] | None, status: int) -> None:
    response = await wire.client.request(method, path, json=body)
    assert response.status_code == status, response.text[:500]
    check("ErrorResponse", response.json())


async def test_an_outage_is_openais_error_shape(wire: InProcess, fake_openai: FakeOpenAI,
                                               fake_anthropic: FakeAnthropic) -> None:
    """Every large model fails (there is no local one): a 503 naming what was tried."""
    fake_openai.enqueue(*[Fault(status=500)] * 5)
    fake_anthropic.enqueue(*[Fault(status=500)] * 5)
    response = await wire.post("/v1/chat/completions", {"model": "large", "messages": HELLO})
    assert response.status_code == 503, response.text[:500]
    check("ErrorResponse", response.json())
    assert response.json()["error"]["tried"]


async def test_an_error_in_a_stream_is_openais_error_shape(wire: InProcess, fake_openai: FakeOpenAI,
                                                           fake_anthropic: FakeAnthropic) -> None:
    """Cut after its first words, with nothing left to continue on: an error event, then [DONE]."""
    fake_openai.enqueue(Fault(cut_after=1), *[Fault(status=500)] * 5)
    fake_anthropic.enqueue(*[Fault(status=500)] * 5)
    response = await wire.post("/v1/chat/completions", {
        "model": "large", "messages": HELLO, "stream": True, "preferred_providers": ["openai"]})
    *chunks, error = sse_data(response.text)
    for chunk in chunks:
        check("CreateChatCompletionStreamResponse", chunk)
    check("ErrorResponse", error)


async def test_a_method_a_path_does_not_serve_is_a_405_with_allow(wire: InProcess) -> None:
    """RFC 9110: a 405 names the methods the path serves, in the Allow header."""
    response = await wire.client.delete("/v1/models")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    check("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == "method_not_allowed"
