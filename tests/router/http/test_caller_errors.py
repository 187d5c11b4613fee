"""The caller's own mistakes, in process: invalid text and unbounded schemas are 400s naming what to
fix before any model is called, and a request the local engine rejects is a 400 that is neither
retried, nor handed to another provider, nor counted against the local model's health."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.generation import InvalidMessages, InvalidSchema, PromptTooLong
from tests.fakes.inprocess import LOCAL, InProcess, config, start

HELLO = {"role": "user", "content": "Hello there"}
HALF_EMOJI = "a broken emoji: \ud83d"  # what JSON's "\ud83d" decodes to: an unpaired surrogate


async def post(api: InProcess, path: str, body: dict[str, Any]) -> Any:
    """With surrogates escaped, as JSON.stringify sends them (httpx's json= cannot encode them)."""
    return await api.client.post(path, content=json.dumps(body),
                                 headers={"content-type": "application/json"})


def chat(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": LOCAL, "messages": messages, "max_tokens": 8, **extra}


INVALID_TEXT = [
    pytest.param([HELLO, {"role": "user", "content": [
        {"type": "text", "text": "fine"}, {"type": "text", "text": HALF_EMOJI}]}],
                 "messages.1.content", "content.1.text has U+D83D (an unpaired UTF-16 surrogate) "
                 "at position 16", id="content-part"),
    pytest.param([{"role": "user", "content": HALF_EMOJI}], "messages.0.content",
                 "content has U+D83D (an unpaired UTF-16 surrogate) at position 16",
                 id="content-string"),
    pytest.param([HELLO, {"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
                 "messages.1.content", "part 0: only text content parts", id="image-part"),
    # Pydantic's JSON parser refuses the lone surrogate of a plain string field itself.
    pytest.param([{"role": "user", "name": "\udc00", "content": "Hi"}], "messages.0.name",
                 "unable to parse raw data as a unicode string", id="name"),
]


@pytest.mark.parametrize(("messages", "param", "says"), INVALID_TEXT)
async def test_invalid_text_is_a_400_naming_the_message(api: InProcess, messages: list[Any],
                                                        param: str, says: str) -> None:
    response = await post(api, "/v1/chat/completions", chat(messages))
    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert says in error["message"]
    assert api.engine.generations == 0


async def test_invalid_text_is_refused_by_every_route_that_takes_text(api: InProcess) -> None:
    calls = [("/api/v1/ai/generate-content", {"content": HALF_EMOJI, "content_type": "summary"},
              "content"),
             ("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": ["ok", HALF_EMOJI]},
              "input"),
             ("/api/v1/ai/embeddings", {"texts": [HALF_EMOJI]}, "texts"),
             ("/v1/chat/completions", chat([HELLO], user="\ud800"), "user"),
             ("/v1/chat/completions", chat([HELLO], stop=["\udfff"]), "stop")]
    for path, body, field in calls:
        response = await post(api, path, body)
        assert response.status_code == 400, path
        assert response.json()["error"]["param"].startswith(field), path
    assert api.engine.generations == 0


async def test_valid_text_passes_in_every_shape(api: InProcess) -> None:
    body = chat([{"role": "system", "content": None}, {"role": "user", "name": "Zoë", "content": [
        {"type": "text", "text": "emoji 🦊 and accents é"}]}], stop=None, user="élève-1")
    response = await post(api, "/v1/chat/completions", body)
    assert response.status_code == 200
    response = await post(api, "/v1/chat/completions", {**body, "stop": ["🦊", "\n"]})
    assert response.status_code == 200


def schema_request(schema: Any) -> dict[str, Any]:
    return chat([HELLO], response_format={"type": "json_schema",
                                          "json_schema": {"name": "answer", "schema": schema}})


UNBOUNDED = [
    pytest.param({"type": "array", "items": {"type": "string"}, "maxItems": 5000},
                 "response_format.json_schema.schema.maxItems", "is 5000; at most 256",
                 id="huge-max-items"),
    pytest.param({"type": "object", "properties": {"n": {"type": "string", "maxLength": "many"}}},
                 "response_format.json_schema.schema.properties.n.maxLength",
                 "must be a non-negative integer", id="non-numeric-bound"),
    pytest.param({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
                 "response_format.json_schema.schema.$defs.a.$ref", "$ref cycle", id="ref-cycle"),
    pytest.param("a schema", "response_format.json_schema.schema", "a valid dictionary",
                 id="not-an-object"),
]


@pytest.mark.parametrize(("schema", "param", "says"), UNBOUNDED)
@pytest.mark.parametrize("model", [LOCAL, "gpt-4o-mini"])
async def test_an_unbounded_schema_is_a_400_before_any_model_sees_it(
        api: InProcess, schema: Any, param: str, says: str, model: str) -> None:
    response = await api.post("/v1/chat/completions", {**schema_request(schema), "model": model})
    error = response.json()["error"]
    assert response.status_code == 400
    assert error["param"] == param
    assert error["message"].startswith(f"{param}: ") and says in error["message"]
    assert (api.engine.generations, api.openai.calls) == (0, [])


REJECTED = [
    pytest.param(InvalidMessages("this model's chat template refuses these messages"), "messages",
                 id="template"),
    pytest.param(InvalidSchema("response_format.json_schema: llama.cpp cannot build a grammar"),
                 "response_format.json_schema", id="grammar"),
]


@pytest.mark.parametrize(("refusal", "param"), REJECTED)
@pytest.mark.parametrize("stream", [False, True])
async def test_what_the_engine_rejects_is_the_callers_fault(
        api: InProcess, refusal: Exception, param: str, stream: bool) -> None:
    api.engine.refusal = refusal
    for _ in range(6):  # more than the breaker's failure threshold
        response = await api.post("/v1/chat/completions", chat([HELLO], stream=stream))
        assert response.status_code == 400
        assert response.json()["error"] == {"type": "invalid_request_error", "code": None,
                                            "message": str(refusal), "param": param}
    assert api.engine.generations == 6  # never retried
    assert api.openai.calls == api.anthropic.calls == []  # nor sent elsewhere
    health = (await api.client.get("/health/providers")).json()["breakers"]
    assert health[f"local/{LOCAL}"]["state"] == "closed"
    assert health[f"local/{LOCAL}"]["consecutive_failures"] == 0
    api.engine.refusal = None
    served = await api.post("/v1/chat/completions", chat([HELLO]))
    assert served.headers["x-learnx-route"] == f"local/{LOCAL}"


async def test_a_prompt_too_long_for_the_local_model_is_served_by_a_larger_candidate(
        api: InProcess) -> None:
    api.engine.refusal = PromptTooLong("the prompt is 6000 tokens; the context is 2048")
    for _ in range(6):  # more than the breaker's failure threshold
        response = await api.post("/v1/chat/completions", chat([HELLO]))
        assert response.status_code == 200
        assert response.headers["x-learnx-route"] != f"local/{LOCAL}"
    assert api.engine.generations == 6  # tried once each, never retried
    health = (await api.client.get("/health/providers")).json()["breakers"]
    assert health[f"local/{LOCAL}"]["state"] == "closed"
    assert health[f"local/{LOCAL}"]["consecutive_failures"] == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_prompt_too_long_for_every_candidate_is_the_callers_400(
        tmp_path: Any, stream: bool) -> None:
    local_only = start(config(tmp_path), hosted=False)
    try:
        local_only.engine.refusal = PromptTooLong("the prompt is 6000 tokens")
        response = await local_only.post("/v1/chat/completions", chat([HELLO], stream=stream))
        assert response.status_code == 400
        assert response.json()["error"] == {"type": "invalid_request_error", "code": None,
                                            "message": "the prompt is 6000 tokens",
                                            "param": "messages"}
    finally:
        await local_only.close()
