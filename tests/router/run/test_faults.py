"""The fault matrix, through the real graph: every upstream fault, streamed or not, on OpenAI and
Anthropic, ends in success through fallback or a typed error; nothing hangs; streams always end
with an explicit terminal event."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from ray import serve

from core.config import load_config
from deployments.app import build_graph
from tests.conftest import AUTH
from tests.fakes import Fault
from tests.fakes.catalog import CATALOG

ASK = [{"role": "user", "content": "Name one prime number."}]
DEADLINE_S = 40  # the test app's request_timeout_s
FAULTS = {
    "http-500": Fault(status=500),
    "http-503": Fault(status=503),
    "http-429-retry-after": Fault(status=429, retry_after=1),
    "http-401": Fault(status=401),
    "delay-past-timeouts": Fault(delay_s=12),
    "hang-before-first-byte": Fault(delay_s=3600),
    "stream-cut-after-2": Fault(cut_after=2),
    "stream-goes-idle": Fault(idle_after=2),
    "malformed-json": Fault(malformed=True),
    "malformed-sse": Fault(cut_after=2, malformed=True),
}
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}


def call(url: str, model: str, stream: bool, **extra) -> tuple[int, dict, list[dict], float]:
    """(status, JSON body or {}, SSE events without [DONE], seconds). Asserts stream framing."""
    body = {"model": model, "messages": ASK, "max_tokens": 16, "temperature": 0, "stream": stream,
            **extra}
    start = time.monotonic()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body,
                      timeout=DEADLINE_S + 10, headers=AUTH) as response:
        raw = response.read().decode()
    elapsed = time.monotonic() - start
    if not stream or not response.headers["content-type"].startswith("text/event-stream"):
        return response.status_code, json.loads(raw), [], elapsed
    data = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]", "a stream must end with [DONE]"
    return response.status_code, {}, [json.loads(d) for d in data[:-1]], elapsed


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
@pytest.mark.parametrize("provider", MODELS)
def test_fault_falls_back_to_the_next_candidate(serve_url, fake_openai, fake_anthropic, provider,
                                                fault, stream) -> None:
    fake = {"openai": fake_openai, "anthropic": fake_anthropic}[provider]
    fake.enqueue(fault)
    status, body, events, elapsed = call(serve_url, MODELS[provider], stream)
    assert status == 200
    assert elapsed < DEADLINE_S
    if stream:
        finish = [e for e in events if e["choices"] and e["choices"][0].get("finish_reason")]
        assert len(finish) == 1, "exactly one terminal chunk"
        route = finish[0]["route"]
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        assert text.strip()
    else:
        route = body["route"]
        assert body["choices"][0]["message"]["content"].strip()
    assert route["path"][0].startswith(f"{provider}/{MODELS[provider]} (failed:")
    assert route["provider"] != provider


@pytest.mark.parametrize("provider", MODELS)
def test_a_stream_cut_mid_answer_continues_on_the_next_candidate(serve_url, fake_openai,
                                                                 fake_anthropic, provider) -> None:
    fake = {"openai": fake_openai, "anthropic": fake_anthropic}[provider]
    fake.enqueue(Fault(cut_after=3))
    status, _, events, _ = call(serve_url, MODELS[provider], stream=True)
    assert status == 200
    seam_at = next(i for i, e in enumerate(events) if e.get("route", {}).get("fallback"))
    before = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:seam_at])
    assert before == "Hello from the"  # the three chunks delivered before the cut
    seam = events[seam_at]["route"]["fallback"]
    assert seam["from"] == f"{provider}/{MODELS[provider]}"
    assert seam["to"] == "local/smollm2-135m"
    # The next candidate was asked to continue the partial answer.
    assert events[-1]["choices"][0]["finish_reason"] in {"stop", "length"}


def all_fail(fake_openai, fake_anthropic) -> None:
    fake_openai.enqueue(*[Fault(status=503)] * 6)
    fake_anthropic.enqueue(*[Fault(status=500)] * 6)


def test_when_everything_fails_a_json_request_gets_a_typed_503(serve_url, fake_openai,
                                                               fake_anthropic) -> None:
    all_fail(fake_openai, fake_anthropic)
    status, body, _, _ = call(serve_url, "large", stream=False)
    assert status == 503
    error = body["error"]
    assert error["type"] == "service_unavailable"
    assert set(error["tried"]) >= {"openai/gpt-4o", "anthropic/claude-3-5-sonnet-latest"}


def test_when_everything_fails_before_a_token_a_stream_request_gets_a_typed_503(
        serve_url, fake_openai, fake_anthropic) -> None:
    all_fail(fake_openai, fake_anthropic)
    status, body, _, _ = call(serve_url, "large", stream=True)
    assert status == 503
    assert body["error"]["code"] == "all_providers_failed"


def test_when_everything_fails_mid_stream_the_stream_ends_with_an_error_event(
        serve_url, fake_openai, fake_anthropic) -> None:
    fake_openai.enqueue(Fault(cut_after=2), *[Fault(status=503)] * 6)
    fake_anthropic.enqueue(*[Fault(status=500)] * 6)
    status, _, events, _ = call(serve_url, "large", stream=True)
    assert status == 200
    assert events[-1]["error"]["type"] == "service_unavailable"
    assert "openai/gpt-4o" in events[-1]["error"]["tried"]


def test_breaker_state_is_visible(serve_url, fake_openai) -> None:
    fake_openai.enqueue(Fault(status=401))
    call(serve_url, "gpt-4o-mini", stream=False)
    health = httpx.get(f"{serve_url}/health/providers", headers=AUTH).json()
    assert health["breakers"]["openai/gpt-4o-mini"]["state"] == "open"  # a bad key opens at once
    assert health["breakers"]["local/smollm2-135m"]["state"] == "closed"
    # While open, requests for it skip it without calling it.
    fake_openai.reset()
    _, body, _, _ = call(serve_url, "gpt-4o-mini", stream=False)
    assert fake_openai.requests == []
    assert body["route"]["path"][0] == "openai/gpt-4o-mini (skipped: circuit open)"


@pytest.fixture(scope="module")
def deadline_30s_url(serve_root: str, fake_openai, fake_anthropic) -> Iterator[str]:
    """A second app on the session's Serve, configured as an operator would with
    AI_REQUEST_TIMEOUT=30 and the default first-token limit (30 s as well): the real local model,
    the hosted fakes, nothing else."""
    args = {"local_models": [{"name": "smollm2-135m", "ray_actor_options": {"num_cpus": 0},
                              "llama_cpp": {"n_ctx": 2048, "n_threads": 1}}],
            "router": {"ray_actor_options": {"num_cpus": 0}, "providers": {
                "openai": {"base_url": f"{fake_openai.url}/v1"},
                "anthropic": {"base_url": fake_anthropic.url}}},
            "embedder": {"enabled": False}, "auth": {"enabled": False},
            "ledger": {"enabled": False}, "catalog": CATALOG}
    config = load_config(args, environ={"AI_REQUEST_TIMEOUT": "30"})
    assert config.router.first_token_timeout_s == config.router.request_timeout_s == 30
    serve.run(build_graph(config), name="learnx-deadline", route_prefix="/deadline30")
    yield f"{serve_root}/deadline30"
    serve.delete("learnx-deadline")


@pytest.fixture
def deadline_30s(deadline_30s_url: str) -> str:
    httpx.post(f"{deadline_30s_url}/health/providers/reset", timeout=10).raise_for_status()
    return deadline_30s_url


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_hanging_provider_leaves_the_local_model_time_within_a_30s_deadline(
        deadline_30s, fake_openai, stream) -> None:
    """Before anything is learned about gpt-4o-mini, its first-token limit is a share of the
    deadline (30 s over three candidates), not all of it."""
    fake_openai.enqueue(Fault(delay_s=3600))
    status, body, events, elapsed = call(deadline_30s, "gpt-4o-mini", stream)
    assert status == 200, body
    assert elapsed < 30
    route = next(e["route"] for e in events if e.get("route")) if stream else body["route"]
    assert route["provider"] == "local"
    assert route["path"][0] == "openai/gpt-4o-mini (failed: openai/gpt-4o-mini: no answer within 10.0s)"


def test_once_its_answers_are_learned_a_silent_model_is_left_in_seconds(
        deadline_30s, fake_openai) -> None:
    for _ in range(20):  # the default min_samples: gpt-4o-mini answers at once
        assert call(deadline_30s, "gpt-4o-mini", stream=False)[0] == 200
    limits = httpx.get(f"{deadline_30s}/health/providers", timeout=10).json()["first_token_limits"]
    learned = limits["openai/gpt-4o-mini"]["limit_s"]
    assert learned < 10  # 3 x its p95, or the 5 s floor: less than a share of the deadline
    fake_openai.enqueue(Fault(delay_s=3600))
    status, body, _, elapsed = call(deadline_30s, "gpt-4o-mini", stream=False)
    assert status == 200, body
    assert body["route"]["provider"] == "local"
    assert body["route"]["path"][0].endswith(f"no answer within {learned:.1f}s)")
    assert elapsed < learned + 5  # then the local model answers
