"""Chat completions in process: the policy's choice, OpenAI's wire format, streaming, fallback and
the errors a caller can cause, over scripted providers and the fake local engine."""

from __future__ import annotations

import json
import time

from core.errors import ProviderError
from tests.fakes.inprocess import NO_CACHE, InProcess, config, start
from tests.fakes.scripted import Cut, Hang, Say

HELLO = [{"role": "user", "content": "Hello there"}]


def chunks(text: str) -> list[dict]:
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


async def test_a_named_hosted_model_answers_in_openai_shape(api: InProcess) -> None:
    api.openai.enqueue(Say("Photosynthesis makes sugar."))
    response = await api.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO})
    body = response.json()
    assert response.status_code == 200, body
    assert response.headers["x-learnx-route"] == "openai/gpt-4o-mini"
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o-mini"
    assert body["choices"][0]["message"] == {"role": "assistant", "refusal": None,
                                             "content": "Photosynthesis makes sugar."}
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5, **NO_CACHE}
    assert body["route"]["reason"] == "requested model"
    assert body["route"]["cost_usd"] == round((2 * 0.15 + 3 * 0.60) / 1e6, 10)


async def test_a_tier_goes_to_the_cheapest_model_the_free_local_one(api: InProcess) -> None:
    response = await api.post("/v1/chat/completions", {"model": "small", "messages": HELLO})
    assert response.headers["x-learnx-route"] == "local/smollm2-135m"
    assert response.json()["route"]["reason"] == "lowest estimated cost in tier small"
    assert api.engine.generations == 1


async def test_preferred_providers_outrank_cost(api: InProcess) -> None:
    response = await api.post("/v1/chat/completions", {
        "model": "small", "messages": HELLO, "preferred_providers": ["anthropic"]})
    assert response.headers["x-learnx-route"] == "anthropic/claude-3-5-haiku-latest"


async def test_a_failed_provider_falls_back_and_the_route_says_so(api: InProcess) -> None:
    api.openai.enqueue(ProviderError("HTTP 503", provider="openai", model="gpt-4o-mini",
                                     upstream_status=503))
    response = await api.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO})
    route = response.json()["route"]
    assert response.status_code == 200
    assert route["provider"] == "local"
    assert route["path"] == ["openai/gpt-4o-mini (failed: openai/gpt-4o-mini: HTTP 503)",
                             "local/smollm2-135m"]


async def test_a_stream_has_a_role_chunk_text_a_finish_with_route_and_usage(api: InProcess) -> None:
    api.openai.enqueue(Say("one two"))
    response = await api.post("/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": HELLO, "stream": True,
        "stream_options": {"include_usage": True}})
    assert response.headers["content-type"].startswith("text/event-stream")
    found = chunks(response.text)
    assert found[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in found if c["choices"])
    assert text == "one two"
    finish = [c for c in found if c["choices"] and c["choices"][0].get("finish_reason")]
    assert finish[0]["choices"][0]["finish_reason"] == "stop"
    assert finish[0]["route"]["model"] == "gpt-4o-mini"
    assert found[-1]["usage"]["completion_tokens"] == 2 and found[-1]["choices"] == []


async def test_a_stream_cut_midway_continues_on_the_next_candidate(api: InProcess) -> None:
    api.openai.enqueue(Cut("The first half "))
    response = await api.post("/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": HELLO, "stream": True})
    found = chunks(response.text)
    seams = [c["route"]["fallback"] for c in found if c.get("route", {}).get("fallback")]
    assert seams == [{"from": "openai/gpt-4o-mini", "to": "local/smollm2-135m",
                      "error": "openai/gpt-4o-mini: stream cut"}]
    continued = api.engine  # the local model was asked to continue after the text so far
    assert continued.generations == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in found if c["choices"])
    assert text.startswith("The first half The fake engine")


async def test_a_hung_provider_is_left_after_the_first_token_limit(api: InProcess) -> None:
    api.openai.enqueue(Hang())
    response = await api.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO})
    assert response.status_code == 200
    assert response.json()["route"]["path"][0].startswith("openai/gpt-4o-mini (failed:")


async def test_when_every_provider_fails_the_answer_names_them(api: InProcess) -> None:
    down = ProviderError("HTTP 500", provider="openai", model="gpt-4o", upstream_status=500)
    api.openai.enqueue(down, down)
    api.anthropic.enqueue(down, down)
    response = await api.post("/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO})
    error = response.json()["error"]
    assert response.status_code == 503
    assert error["code"] == "all_providers_failed"
    assert error["tried"] == ["openai/gpt-4o", "anthropic/claude-3-5-sonnet-latest",
                              "anthropic/claude-3-5-sonnet-latest"]


async def test_an_unknown_model_is_a_404_listing_the_models(api: InProcess) -> None:
    response = await api.post("/v1/chat/completions", {"model": "gpt-9", "messages": HELLO})
    assert response.status_code == 404
    assert "smollm2-135m" in response.json()["error"]["message"]


async def test_too_many_messages_is_a_422(api: InProcess) -> None:
    response = await api.post("/v1/chat/completions", {"model": "small",
                                                       "messages": HELLO * 300})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "messages"


async def test_max_tokens_beyond_the_limit_is_a_400(api: InProcess) -> None:
    response = await api.post("/v1/chat/completions", {
        "model": "small", "messages": HELLO, "max_tokens": 100_000})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"


async def test_json_mode_reaches_the_provider_as_a_schema(api: InProcess) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    response = await api.post("/v1/chat/completions", {
        "model": "small", "messages": HELLO,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"a": 0}


async def test_models_lists_served_chat_and_embedding_models(api: InProcess) -> None:
    listed = (await api.client.get("/v1/models")).json()["data"]
    owners = {m["id"]: m["owned_by"] for m in listed}
    assert owners["smollm2-135m"] == "local" and owners["gpt-4o"] == "openai"
    assert owners["all-minilm-l6-v2"] == "local"


async def test_a_chunked_body_over_the_limit_is_a_413(api: InProcess) -> None:
    async def chunks():
        yield b'{"model": "small", "messages": [{"role": "user", "content": "'
        for _ in range(200):
            yield b"x" * 1000
        yield b'"}]}'

    response = await api.client.post("/v1/chat/completions", content=chunks(),
                                     headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert "larger than 100000 bytes" in response.json()["error"]["message"]


JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
    "type": "object", "properties": {"a": {"type": "integer"}}}}}


async def test_a_hanging_provider_leaves_the_local_model_time_within_the_deadline(
        tmp_path) -> None:
    """AI_REQUEST_TIMEOUT no longer than the first-token limit: the hung hosted model gets a share
    of the deadline, the local model answers within it, streamed or not."""
    api = start(config(tmp_path, router={"request_timeout_s": 1.5, "first_token_timeout_s": 1.5}))
    try:
        for stream in (False, True):
            api.openai.enqueue(Hang())
            started = time.monotonic()
            response = await api.post("/v1/chat/completions", {
                "model": "gpt-4o-mini", "messages": HELLO, "stream": stream})
            assert response.status_code == 200, response.text
            assert response.headers["x-learnx-route"] == "local/smollm2-135m"
            assert time.monotonic() - started < 1.5
    finally:
        await api.close()


async def test_a_slow_steady_stream_is_not_cut_by_the_deadline(tmp_path) -> None:
    api = start(config(tmp_path, router={"request_timeout_s": 0.3, "idle_timeout_s": 0.3}))
    try:
        api.openai.enqueue(Say("one two three four five six", word_delay_s=0.1))
        response = await api.post("/v1/chat/completions", {
            "model": "gpt-4o-mini", "messages": HELLO, "stream": True})
        found = chunks(response.text)
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in found
                       if c["choices"]) == "one two three four five six"
        assert found[-1]["route"] == {"provider": "openai", "model": "gpt-4o-mini",
                                      "reason": "requested model", "cost_usd": found[-1][
                                          "route"]["cost_usd"]}  # no fallback path
        health = (await api.client.get("/health/providers")).json()
        assert health["breakers"]["openai/gpt-4o-mini"]["consecutive_failures"] == 0
    finally:
        await api.close()


async def test_a_json_answer_cut_midway_is_answered_whole_by_the_next_model(api: InProcess) -> None:
    api.openai.enqueue(Cut('{"a": '))
    response = await api.post("/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": HELLO, "response_format": JSON_FORMAT})
    body = response.json()
    assert response.status_code == 200, body
    assert json.loads(body["choices"][0]["message"]["content"]) == {"a": 0}
    assert body["route"]["path"][0] == "openai/gpt-4o-mini (failed: openai/gpt-4o-mini: stream cut)"
    assert api.engine.generations == 1


async def test_a_streamed_json_answer_cut_midway_ends_with_an_error_event(api: InProcess) -> None:
    """What reached the client cannot be withdrawn, and another model's JSON cannot continue it."""
    api.openai.enqueue(Cut('{"a": '))
    response = await api.post("/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": HELLO, "response_format": JSON_FORMAT, "stream": True})
    found = chunks(response.text)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in found
                   if c.get("choices")) == '{"a": '
    assert not any(c["choices"][0].get("finish_reason") for c in found if c.get("choices"))
    assert found[-1]["error"]["type"] == "upstream_error"
    assert "cannot be continued by another model" in found[-1]["error"]["message"]
    assert api.engine.generations == 0
