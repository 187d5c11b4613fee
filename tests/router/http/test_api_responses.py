"""/v1/responses and /v1/completions through the real HTTP proxy and Serve graph with the official
`openai` SDK as the client: on the packaged llama.cpp model and on the OpenAI and Anthropic wire
fakes; every body checked against OpenAI's published schemas."""

from __future__ import annotations

import json

import pytest

from tests.openai_schemas import check
from tests.router.http.test_api_accounting import records as ledger_records

LOCAL = "smollm2-135m"
PROVIDERS = [(LOCAL, "local"), ("gpt-4o-mini", "openai"), ("claude-haiku", "anthropic")]


@pytest.mark.parametrize("model, provider", PROVIDERS)
def test_responses_create_and_stream_on_every_provider(openai_client, model: str,
                                                       provider: str) -> None:
    raw = openai_client.responses.with_raw_response.create(
        model=model, input="Say hello to a new student.", max_output_tokens=16, temperature=0)
    check("Response", raw.http_response.json())
    assert raw.headers["x-learnx-route"].startswith(f"{provider}/")
    response = raw.parse()
    assert response.status in ("completed", "incomplete") and response.output_text.strip()
    assert response.usage is not None and response.usage.output_tokens > 0
    with openai_client.responses.stream(model=model, input="Say hello to a new student.",
                                        max_output_tokens=16, temperature=0) as stream:
        events = list(stream)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert "".join(deltas) == events[-1].response.output_text and deltas


def test_a_json_schema_format_constrains_the_local_model(openai_client) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}},
              "required": ["name"], "additionalProperties": False}
    response = openai_client.responses.create(
        model=LOCAL, input="Invent a name for a pet.", max_output_tokens=48, temperature=0,
        text={"format": {"type": "json_schema", "name": "pet", "schema": schema}})
    assert set(json.loads(response.output_text)) == {"name"}


def test_stateful_parameters_are_refused_by_name(openai_client) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.responses.create(model=LOCAL, input="Hi", previous_response_id="resp_1")
    assert raised.value.body["param"] == "previous_response_id"


@pytest.mark.parametrize("model, provider", [(LOCAL, "local"),
                                             ("gpt-3.5-turbo-instruct", "openai")])
def test_completions_create_and_stream(openai_client, model: str, provider: str) -> None:
    raw = openai_client.completions.with_raw_response.create(
        model=model, prompt="The three primary colours are", max_tokens=8, temperature=0)
    check("CreateCompletionResponse", raw.http_response.json())
    assert raw.headers["x-learnx-route"] == f"{provider}/{model}"
    completion = raw.parse()
    assert completion.choices[0].text and completion.usage.completion_tokens > 0
    chunks = list(openai_client.completions.create(
        model=model, prompt="The three primary colours are", max_tokens=8, temperature=0,
        stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_both_routes_are_in_the_ledger(openai_client, serve_url: str) -> None:
    user = "ledger-responses"
    openai_client.responses.create(model=LOCAL, input="Hi", max_output_tokens=4, user=user)
    openai_client.completions.create(model=LOCAL, prompt="Hi", max_tokens=4, user=user)
    records = ledger_records(serve_url, user, expect=2)
    assert sorted(r["operation"] for r in records) == ["completions", "responses"]
    assert all(r["output_tokens"] > 0 and r["provider"] == "local" for r in records)
