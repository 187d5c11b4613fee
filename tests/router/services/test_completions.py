"""POST /v1/completions in process: a raw prompt on the local model or an OpenAI completion model,
OpenAI's `text_completion` objects and stream chunks (checked against its published schema), the
parameters it refuses, and the same fallback, budgets and ledger as chat."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.errors import ProviderError
from core.generation import RawPromptTooLong
from tests.fakes.inprocess import NO_CACHE, InProcess, config, start
from tests.fakes.scripted import Cut, Say
from tests.openai_schemas import check, validator

INSTRUCT = "gpt-3.5-turbo-instruct"


def check_chunk(chunk: dict[str, Any]) -> None:
    """OpenAI streams legacy completions as `CreateCompletionResponse` objects whose choices have
    `finish_reason: null` until the last chunk; its schema describes only the whole object, whose
    finish_reason is never null: check the chunk with the last chunk's value in its place."""
    choices = [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in chunk["choices"]]
    assert all("finish_reason" in c for c in chunk["choices"])
    check("CreateCompletionResponse", {**chunk, "choices": choices})


def chunks(text: str) -> list[dict[str, Any]]:
    lines = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    found = [json.loads(line) for line in lines[:-1]]
    for chunk in found:
        check_chunk(chunk)
    return found


async def complete(api: InProcess, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/completions", {"model": INSTRUCT, "prompt": "Once", **body})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    check("CreateCompletionResponse", found)
    return found


async def test_an_openai_completion_model_answers_a_text_completion(api: InProcess) -> None:
    api.openai.enqueue(Say("upon a time"))
    response = await api.post("/v1/completions", {"model": INSTRUCT, "prompt": "Once",
                                                  "max_tokens": 5, "stop": ["."], "seed": 1})
    body = response.json()
    check("CreateCompletionResponse", body)
    assert response.headers["x-learnx-route"] == f"openai/{INSTRUCT}"
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["choices"] == [{"index": 0, "text": "upon a time", "logprobs": None,
                                "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4, **NO_CACHE}
    assert body["route"]["cost_usd"] == round((1 * 1.50 + 3 * 2.00) / 1e6, 10)
    (model, params), = api.openai.calls
    assert (model, params.prompt, params.messages) == (INSTRUCT, "Once", [])
    assert (params.max_tokens, params.stop, params.seed) == (5, ["."], 1)


async def test_the_local_model_continues_the_raw_prompt(api: InProcess) -> None:
    body = await complete(api, model="smollm2-135m", prompt=["Once upon"], max_tokens=3)
    assert body["route"]["provider"] == "local"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


async def test_the_default_max_tokens_is_openais_16(api: InProcess) -> None:
    await complete(api)
    assert api.openai.calls[0][1].max_tokens == 16


async def test_a_tier_ranks_only_models_that_complete_raw_prompts(api: InProcess) -> None:
    body = await complete(api, model="small", preferred_providers=["anthropic", "openai"])
    assert body["route"]["model"] == INSTRUCT  # Anthropic's models have no completions API
    assert not api.anthropic.calls


async def test_a_chat_model_is_a_404_that_says_so(api: InProcess) -> None:
    response = await api.post("/v1/completions", {"model": "gpt-4o-mini", "prompt": "Once"})
    assert response.status_code == 404
    assert "is a chat model, not served by this endpoint" in response.json()["error"]["message"]
    assert INSTRUCT in response.json()["error"]["message"]


async def test_a_stream_sends_chunks_a_finish_with_route_and_usage(api: InProcess) -> None:
    api.openai.enqueue(Say("upon a time"))
    response = await api.post("/v1/completions", {"model": INSTRUCT, "prompt": "Once",
                                                  "stream": True,
                                                  "stream_options": {"include_usage": True}})
    found = chunks(response.text)
    assert "".join(c["choices"][0]["text"] for c in found if c["choices"]) == "upon a time"
    assert all(c["choices"][0]["finish_reason"] is None for c in found[:-2])
    assert found[-2]["choices"][0]["finish_reason"] == "stop"
    assert found[-2]["route"]["model"] == INSTRUCT
    assert found[-1]["choices"] == [] and found[-1]["usage"]["completion_tokens"] == 3
    assert len({c["id"] for c in found}) == 1


async def test_a_stream_cut_midway_continues_the_prompt_on_the_next_model(api: InProcess) -> None:
    api.openai.enqueue(Cut("upon a "))
    response = await api.post("/v1/completions", {"model": INSTRUCT, "prompt": "Once ",
                                                  "stream": True})
    found = chunks(response.text)
    assert any(c["route"]["fallback"]["from"] == f"openai/{INSTRUCT}" for c in found
               if "fallback" in c.get("route", {}))
    assert found[-1]["route"]["provider"] == "local"
    assert api.engine.generations == 1  # the local model continued "Once upon a "


async def test_a_prompt_longer_than_the_local_context_is_a_400_on_prompt(tmp_path: Any) -> None:
    local_only = start(config(tmp_path), hosted=False)
    try:
        local_only.engine.refusal = RawPromptTooLong("the prompt is 9000 tokens")
        response = await local_only.post("/v1/completions", {"model": "smollm2-135m",
                                                             "prompt": "Once"})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "prompt"
    finally:
        await local_only.close()


async def test_a_request_leaves_one_ledger_record_named_completions(api: InProcess) -> None:
    api.openai.enqueue(ProviderError("HTTP 503", provider="openai", model=INSTRUCT,
                                     upstream_status=503))
    await complete(api, user="ada")
    (record,) = await api.records("ada")
    assert (record["operation"], record["provider"], record["status"]) == \
        ("completions", "local", 200)
    assert record["fallback_path"] is not None


@pytest.mark.parametrize("extra, param", [
    ({"echo": True}, "echo"),
    ({"n": 2}, "n"),
    ({"best_of": 3}, "best_of"),
    ({"logprobs": 2}, "logprobs"),
    ({"suffix": "end"}, "suffix"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"tools": []}, "tools"),
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"prompt": [1212, 318]}, "prompt"),
    ({"prompt": [[1212]]}, "prompt"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
async def test_what_it_cannot_honour_is_a_400_naming_it(api: InProcess, extra: dict[str, Any],
                                                       param: str) -> None:
    response = await api.post("/v1/completions", {"model": INSTRUCT, "prompt": "Once", **extra})
    assert response.status_code == 400, response.text
    check("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == param
    assert not api.openai.calls


async def test_defaults_sent_explicitly_are_accepted(api: InProcess) -> None:
    await complete(api, echo=False, n=1, best_of=1, logprobs=None, suffix=None,
                   frequency_penalty=0, presence_penalty=0.0, logit_bias={}, user="ada")


def test_the_chunk_check_still_holds_the_rest_of_the_schema() -> None:
    chunk = {"id": "c", "object": "text_completion", "created": 1, "model": "m",
             "choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": None}]}
    check_chunk(chunk)
    with pytest.raises(AssertionError):
        check_chunk({**chunk, "object": "chat.completion.chunk"})
    assert not validator("CreateCompletionResponse").is_valid(chunk)  # why the check is needed
