"""Traces in process: the whole API with tracing on, exporting over OTLP/HTTP to the tests' receiver
(tests/fakes/otlp.py): the request's server span, its attempts' client spans with the GenAI
attributes, a fallback's failed attempt, the caller's traceparent, and the Embedder's span."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from core.config import HostedProviderConfig
from core.errors import ProviderError
from router.http.api import build_api
from router.run.providers.anthropic import AnthropicProvider
from router.run.providers.openai import OpenAIProvider
from router.run.spans import NO_SPANS
from tests.conftest import ANTHROPIC_KEY, OPENAI_KEY
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.fakes.inprocess import InProcess, config, start
from tests.fakes.otlp import OtlpReceiver, ReceivedSpan
from tests.fakes.scripted import Say

HELLO = [{"role": "user", "content": "Hello there"}]
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest_asyncio.fixture(loop_scope="function")
async def traced(tmp_path: Any, otlp: OtlpReceiver) -> AsyncIterator[InProcess]:
    running = start(config(tmp_path, tracing={"enabled": True, "otlp_endpoint": otlp.url}))
    yield running
    await running.close()


async def exported(api: InProcess, otlp: OtlpReceiver, count: int) -> list[ReceivedSpan]:
    """The spans received once `count` arrived (the batch processor sends them on a flush)."""
    for tracing in (api.services.tracing, api.embedder.tracing):
        assert tracing is not None
        tracing.provider.force_flush()
    return otlp.wait_for(lambda spans: len(spans) >= count, timeout_s=10)


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_a_completion_is_a_server_span_over_its_attempt(traced: InProcess,
                                                              otlp: OtlpReceiver) -> None:
    traced.openai.enqueue(Say("Photosynthesis makes sugar."))
    response = await traced.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO},
                                 headers={"X-Request-Id": "req-42"})
    assert response.status_code == 200
    spans = await exported(traced, otlp, 2)
    request = one(spans, "POST /v1/chat/completions")
    attempt = one(spans, "chat gpt-4o-mini")
    usage = response.json()["usage"]
    assert request.kind == "server" and request.parent_id == "" and request.service == "learnx-ai"
    assert request.attributes | {"learnx.record_id": None} == request.attributes | {
        "http.request.method": "POST", "http.route": "/v1/chat/completions",
        "http.response.status_code": 200, "learnx.request_id": "req-42",
        "learnx.tenant": "backend", "learnx.operation": "chat.completions",
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.provider.name": "openai", "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"], "learnx.outcome": "success",
        "learnx.fallbacks": 0, "learnx.retries": 0, "learnx.record_id": None}
    assert request.attributes["gen_ai.response.time_to_first_chunk"] > 0
    (record,) = await traced.records()
    assert request.attributes["learnx.record_id"] == record["id"]  # the trace joins the ledger
    assert attempt.kind == "client" and attempt.trace_id == request.trace_id
    assert attempt.parent_id == request.span_id
    assert attempt.attributes["gen_ai.operation.name"] == "chat"
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attempt.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attempt.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attempt.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert request.start_ns <= attempt.start_ns <= attempt.end_ns <= request.end_ns


async def test_a_stream_s_span_ends_with_its_last_chunk_and_counts_its_tokens(
        traced: InProcess, otlp: OtlpReceiver) -> None:
    traced.openai.enqueue(Say("one two three", word_delay_s=0.02))
    response = await traced.post("/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": HELLO, "stream": True,
        "stream_options": {"include_usage": True}})
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    spans = await exported(traced, otlp, 2)
    request = one(spans, "POST /v1/chat/completions")
    attempt = one(spans, "chat gpt-4o-mini")
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 3
    assert request.attributes["gen_ai.usage.output_tokens"] == 3
    assert request.attributes["gen_ai.request.stream"] is True
    # The words came 20 ms apart: the span covers them all, not just the first chunk.
    assert request.end_ns - request.start_ns > 60_000_000
    assert attempt.end_ns <= request.end_ns


async def test_a_fallback_has_one_span_per_attempt_the_failed_one_in_error(
        traced: InProcess, otlp: OtlpReceiver) -> None:
    traced.openai.enqueue(ProviderError("HTTP 503", provider="openai", model="gpt-4o-mini",
                                        upstream_status=503))
    response = await traced.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO})
    assert response.status_code == 200
    spans = await exported(traced, otlp, 3)
    failed, served = one(spans, "chat gpt-4o-mini"), one(spans, "chat smollm2-135m")
    request = one(spans, "POST /v1/chat/completions")
    assert failed.error and failed.attributes["error.type"] == "ProviderError"
    assert not served.error and served.attributes["gen_ai.provider.name"] == "local"
    assert {failed.parent_id, served.parent_id} == {request.span_id}
    assert request.attributes["learnx.fallbacks"] == 1
    assert request.attributes["gen_ai.response.model"] == "smollm2-135m"


async def test_the_caller_s_traceparent_is_the_parent(traced: InProcess, otlp: OtlpReceiver) -> None:
    response = await traced.post("/v1/chat/completions", {"model": "small", "messages": HELLO},
                                 headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    assert response.status_code == 200
    spans = await exported(traced, otlp, 2)
    request = one(spans, "POST /v1/chat/completions")
    assert request.trace_id == CALLER_TRACE and request.parent_id == CALLER_SPAN
    assert {s.trace_id for s in spans} == {CALLER_TRACE}
    (sent,) = traced.engine.params  # the context a replica's span continues: the attempt's
    attempt = one(spans, "chat smollm2-135m")
    assert sent.trace == {"traceparent": f"00-{CALLER_TRACE}-{attempt.span_id}-01"}


async def test_a_caller_that_did_not_sample_its_trace_is_not_traced(
        traced: InProcess, otlp: OtlpReceiver) -> None:
    response = await traced.post("/v1/chat/completions", {"model": "small", "messages": HELLO},
                                 headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"})
    assert response.status_code == 200
    await traced.post("/v1/chat/completions", {"model": "small", "messages": HELLO})
    spans = await exported(traced, otlp, 2)
    assert CALLER_TRACE not in {s.trace_id for s in spans} and len(spans) == 2


async def test_a_refused_request_has_its_span_with_its_status(traced: InProcess,
                                                              otlp: OtlpReceiver) -> None:
    response = await traced.client.post("/v1/chat/completions", headers={"X-API-Key": "wrong"},
                                        json={"model": "small", "messages": HELLO})
    assert response.status_code == 401
    (span,) = await exported(traced, otlp, 1)
    assert span.attributes["http.response.status_code"] == 401
    assert "gen_ai.operation.name" not in span.attributes


async def test_embeddings_trace_into_the_embedder(traced: InProcess, otlp: OtlpReceiver) -> None:
    response = await traced.post("/v1/embeddings", {"model": "all-minilm-l6-v2",
                                                    "input": ["one", "two", "one"]})
    assert response.status_code == 200
    spans = await exported(traced, otlp, 2)
    request = one(spans, "POST /v1/embeddings")
    embedder = one(spans, "embeddings all-minilm-l6-v2")
    assert embedder.parent_id == request.span_id and embedder.kind == "server"
    assert embedder.attributes["gen_ai.operation.name"] == "embeddings"
    assert embedder.attributes["learnx.embed.texts"] == 3
    assert embedder.attributes["learnx.embed.deduplicated"] == 1
    assert request.attributes["gen_ai.operation.name"] == "embeddings"
    assert request.attributes["gen_ai.usage.input_tokens"] == response.json()["usage"]["prompt_tokens"]


async def test_tracing_is_off_by_default(api: InProcess) -> None:
    assert api.services.tracing is None and api.embedder.tracing is None
    assert "Traced" not in [m.cls.__name__ for m in build_api(api.services).user_middleware]
    assert api.services.chat.start([], None, None)._spans is NO_SPANS


async def test_a_sample_ratio_of_zero_traces_nothing(tmp_path: Any, otlp: OtlpReceiver) -> None:
    api = start(config(tmp_path, tracing={"enabled": True, "otlp_endpoint": otlp.url,
                                          "sample_ratio": 0}))
    try:
        assert (await api.post("/v1/embeddings", {"model": "all-minilm-l6-v2",
                                                  "input": ["one"]})).status_code == 200
        assert (await api.post("/v1/chat/completions",
                               {"model": "small", "messages": HELLO})).status_code == 200
        (sent,) = api.engine.params
        assert sent.trace is None  # no context sent on: a replica makes no span either
    finally:
        await api.close()  # exports what is buffered
    assert otlp.received() == []


async def test_hosted_providers_send_the_attempt_s_context_upstream(
        tmp_path: Any, otlp: OtlpReceiver, fake_openai: FakeOpenAI,
        fake_anthropic: FakeAnthropic) -> None:
    keys = {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    api = start(config(tmp_path, tracing={"enabled": True, "otlp_endpoint": otlp.url}), providers={
        "openai": OpenAIProvider.from_env(HostedProviderConfig(base_url=f"{fake_openai.url}/v1"),
                                          keys),
        "anthropic": AnthropicProvider.from_env(HostedProviderConfig(base_url=fake_anthropic.url),
                                                keys)})
    try:
        for model in ("gpt-4o-mini", "claude-3-5-haiku-latest"):
            response = await api.post("/v1/chat/completions", {"model": model, "messages": HELLO})
            assert response.status_code == 200, response.text
        spans = await exported(api, otlp, 4)
    finally:
        await api.close()
    for fake, model in ((fake_openai, "gpt-4o-mini"), (fake_anthropic, "claude-3-5-haiku-latest")):
        attempt = one(spans, f"chat {model}")
        (request,) = fake.requests
        # Sampled (flag 01; 02 says the trace id is random, W3C Trace Context level 2)
        assert request.headers["traceparent"] in (f"00-{attempt.trace_id}-{attempt.span_id}-{flags}"
                                                  for flags in ("01", "03"))


async def test_generated_content_is_a_chat_under_its_request(traced: InProcess,
                                                             otlp: OtlpReceiver) -> None:
    response = await traced.post("/api/v1/ai/generate-content", {
        "content": "Cells divide by mitosis.", "content_type": "explanation", "stream": True,
        "model": "smollm2-135m", "difficulty": "beginner", "user_id": "learner-7"})
    assert response.status_code == 200 and '"done"' in response.text
    spans = await exported(traced, otlp, 2)
    request = one(spans, "POST /api/v1/ai/generate-content")
    attempt = one(spans, "chat smollm2-135m")
    assert attempt.parent_id == request.span_id
    assert request.attributes["learnx.operation"] == "generate-content"
    assert request.attributes["gen_ai.operation.name"] == "chat"
    assert request.attributes["gen_ai.usage.output_tokens"] == \
        attempt.attributes["gen_ai.usage.output_tokens"] > 0
    assert "learner-7" not in str(request.attributes)  # no user id in traces
