"""Traces under real Serve: the graph on the fake engine and encoder with tracing on, exporting to
the tests' OTLP receiver from every replica's process. The Router's spans and the replicas' (an
LLMServer's generation, the Embedder's call) are one trace, joined across the Serve handle calls."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from ray import serve

from deployments.app import build_graph
from tests.fakes.inprocess import BASE, config
from tests.fakes.otlp import OtlpReceiver, ReceivedSpan
from tests.fakes.scripted import fake_encoder, fake_engine

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def traced_url(serve_root: str, otlp: OtlpReceiver,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app_config = config(tmp_path_factory.mktemp("traced-graph"), auth={"enabled": False},
                        local_models=[{**BASE["local_models"][0],
                                       "ray_actor_options": {"num_cpus": 0}}],
                        router={"ray_actor_options": {"num_cpus": 0}},
                        embedder={"ray_actor_options": {"num_cpus": 0}},
                        tracing={"enabled": True, "otlp_endpoint": otlp.url})
    serve.run(build_graph(app_config, fake_engine, fake_encoder), name="learnx-traced",
              route_prefix="/traced")
    yield f"{serve_root}/traced"
    serve.delete("learnx-traced")


def of(spans: list[ReceivedSpan], component: str, kind: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.component == component and s.kind == kind]


def test_a_stream_s_replica_span_continues_the_router_s_trace(traced_url: str,
                                                               otlp: OtlpReceiver) -> None:
    with httpx.stream("POST", f"{traced_url}/v1/chat/completions", timeout=60,
                      headers={"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"},
                      json={"model": "smollm2-135m", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}) as response:
        assert response.status_code == 200
        assert list(response.iter_lines())[-2:] == ["data: [DONE]", ""]
    # Each replica's batch processor exports every 5 s.
    spans = otlp.wait_for(lambda found: len(of(found, "llm", "server")) == 1 and
                          len(of(found, "router", "server")) == 1, timeout_s=60)
    (request,), (attempt,) = of(spans, "router", "server"), of(spans, "router", "client")
    (generation,) = of(spans, "llm", "server")
    assert {request.trace_id, attempt.trace_id, generation.trace_id} == {TRACE}
    assert request.parent_id == CALLER_SPAN and attempt.parent_id == request.span_id
    assert generation.parent_id == attempt.span_id  # across the Serve handle call
    assert generation.name == "generate smollm2-135m"
    assert generation.attributes["gen_ai.provider.name"] == "llama_cpp"
    assert generation.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert generation.attributes["gen_ai.usage.output_tokens"] == \
        attempt.attributes["gen_ai.usage.output_tokens"] > 0
    assert 0 < generation.attributes["gen_ai.response.time_to_first_chunk"] < \
        attempt.attributes["gen_ai.response.time_to_first_chunk"]
    assert attempt.start_ns <= generation.start_ns <= generation.end_ns <= request.end_ns


def test_the_embedder_s_span_continues_the_router_s_trace(traced_url: str,
                                                           otlp: OtlpReceiver) -> None:
    response = httpx.post(f"{traced_url}/v1/embeddings", timeout=60,
                          json={"model": "all-minilm-l6-v2", "input": ["one", "two"]})
    assert response.status_code == 200
    spans = otlp.wait_for(lambda found: len(of(found, "embedder", "server")) == 1 and
                          len(of(found, "router", "server")) == 1, timeout_s=60)
    (request,), (embedding,) = of(spans, "router", "server"), of(spans, "embedder", "server")
    assert embedding.trace_id == request.trace_id and embedding.parent_id == request.span_id
    assert embedding.attributes["learnx.embed.texts"] == 2
