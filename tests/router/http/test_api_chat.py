"""/v1/chat/completions through the real HTTP proxy, Serve graph and llama.cpp model."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.conftest import AUTH
from tests.metrics import total
from tests.openai_schemas import check

GENERATIONS = "ray_learnx_llm_generations_total"

MODEL = "smollm2-135m"
HELLO = [{"role": "user", "content": "Say hello to a new student."}]


def test_completion_reports_content_usage_and_route(openai_client) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=24, temperature=0)
    completion = raw.parse()
    check("CreateChatCompletionResponse", raw.http_response.json())  # OpenAI's own schema
    assert raw.headers["x-learnx-route"] == f"local/{MODEL}"
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.choices[0].message.content.strip()
    assert completion.choices[0].finish_reason in {"stop", "length"}
    usage = completion.usage
    assert usage.prompt_tokens > 5
    assert 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_alias_resolves_to_the_concrete_model(openai_client) -> None:
    completion = openai_client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=4)
    assert completion.model == MODEL


def test_max_tokens_bounds_the_completion(openai_client) -> None:
    completion = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=5, temperature=0)
    assert completion.usage.completion_tokens == 5
    assert completion.choices[0].finish_reason == "length"


def test_stream_arrives_in_chunks_with_usage(openai_client) -> None:
    stream = openai_client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=32, temperature=0, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_stream_and_non_stream_agree_at_temperature_zero(openai_client) -> None:
    kwargs = {"model": MODEL, "messages": HELLO, "max_tokens": 16, "temperature": 0}
    whole = openai_client.chat.completions.create(**kwargs)
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       openai_client.chat.completions.create(**kwargs, stream=True) if c.choices)
    assert streamed == whole.choices[0].message.content


def test_stream_ends_with_done(serve_url: str) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{serve_url}/v1/chat/completions", json=body, timeout=60, headers=AUTH) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        check("CreateChatCompletionStreamResponse", json.loads(event[6:]))  # OpenAI's own schema


def test_json_mode_returns_json(openai_client) -> None:
    completion = openai_client.chat.completions.create(
        model=MODEL, max_tokens=64, temperature=0, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Describe a cat as JSON with name and color."}])
    content = completion.choices[0].message.content
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert content.lstrip().startswith("{")


def test_models_lists_local_and_keyed_hosted_models(openai_client) -> None:
    models = {m.id: m.owned_by for m in openai_client.models.list()}
    assert models[MODEL] == "local"
    assert models["gpt-4o-mini"] == "openai"
    assert models["claude-3-5-haiku-latest"] == "anthropic"


def test_a_prompt_longer_than_the_local_context_is_served_by_a_larger_model(serve_url: str
                                                                           ) -> None:
    """~2,470 tokens by SmolLM2's tokenizer (two per Chinese character), its context 2,048: not the
    caller's mistake while a hosted model of the tier fits it."""
    body = {"model": MODEL, "max_tokens": 8,
            "messages": [{"role": "user", "content": "光合作用是绿色植物" * 145}]}
    response = httpx.post(f"{serve_url}/v1/chat/completions", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    assert not response.headers["x-learnx-route"].startswith("local/")


def test_health_and_readiness(serve_url: str) -> None:
    assert httpx.get(f"{serve_url}/health").json() == {"status": "ok"}  # open: no key needed
    ready = httpx.get(f"{serve_url}/ready", timeout=30)
    assert ready.status_code == 200
    assert ready.json()["models"] == {MODEL: "ok", "embedder": "ok"}


BAD_REQUESTS = [
    pytest.param(b"{not json", 400, "not valid JSON", id="malformed-json"),
    pytest.param({"model": MODEL}, 400, "messages: Field required", id="missing-messages"),
    pytest.param({"model": MODEL, "messages": []}, 400, "messages", id="empty-messages"),
    pytest.param({"messages": HELLO}, 400, "model: Field required", id="missing-model"),
    pytest.param({"model": "gpt-9", "messages": HELLO}, 404, "does not exist", id="unknown-model"),
    pytest.param({"model": MODEL, "messages": HELLO, "max_tokens": 0}, 400, "max_tokens",
                 id="max-tokens-zero"),
    pytest.param({"model": MODEL, "messages": HELLO, "max_tokens": 10**6}, 400,
                 "must be between 1 and 4096", id="max-tokens-too-large"),
    pytest.param({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400,
                 "messages.0.role", id="bad-role"),
    pytest.param({"model": MODEL, "messages": [{"role": "user", "content": "x" * 300_000}]}, 413,
                 "larger than 200000 bytes", id="oversized-body"),
]


@pytest.mark.parametrize(("body", "status", "says"), BAD_REQUESTS)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_input_gets_a_clear_4xx(serve_url: str, body, status: int, says: str,
                                    stream: bool) -> None:
    if isinstance(body, dict):
        body = json.dumps({**body, "stream": stream}).encode()
    response = httpx.post(f"{serve_url}/v1/chat/completions", content=body,
                          headers={**AUTH, "content-type": "application/json"}, timeout=60)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert says in error["message"]


def test_client_disconnect_stops_the_generation(serve_url: str, openai_client) -> None:
    cancelled = {"model": MODEL, "outcome": "cancelled"}
    before = total(GENERATIONS, **cancelled)
    body = {"model": MODEL, "max_tokens": 1500, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "Count from 1 to 2000, one number per line."}]}
    with httpx.stream("POST", f"{serve_url}/v1/chat/completions", json=body, timeout=60, headers=AUTH) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
    deadline = time.monotonic() + 30
    while total(GENERATIONS, **cancelled) == before:
        assert time.monotonic() < deadline, "the generation kept running after the client left"
        time.sleep(0.2)
    # The replica is free again: a new request is served.
    completion = openai_client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert completion.usage.completion_tokens > 0
