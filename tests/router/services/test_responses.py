"""POST /v1/responses in process: OpenAI's Response object and its stream of semantic events (each
checked against OpenAI's published schemas), input items and function tools in the router's terms,
what the stateless subset refuses, and the same policy, fallback, budgets and ledger as chat."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import ProviderError
from router.http.api import build_api
from tests.fakes.inprocess import KEY, InProcess, config, start
from tests.fakes.scripted import Call, Cut, Say
from tests.openai_schemas import check

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}

# Each stream event's schema in OpenAI's document.
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent", "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.completed": "ResponseCompletedEvent", "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent", "error": "ResponseErrorEvent",
}


async def create(api: InProcess, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/responses", {"model": "gpt-4o-mini", "input": "Hi", **body})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    check("Response", found)
    return found


async def events(api: InProcess, **body: Any) -> list[dict[str, Any]]:
    """The stream's events, each checked against its schema and its SSE event name."""
    response = await api.post("/v1/responses", {"model": "gpt-4o-mini", "input": "Hi",
                                                "stream": True, **body})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    found = []
    run = response.headers["x-learnx-run-id"]
    for number, frame in enumerate(response.text.strip().split("\n\n"), 1):
        event_id, name, data = frame.split("\n")
        assert event_id == f"id: {run}:{number}"  # router/http/runs.py
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        check(EVENT_SCHEMAS[event["type"]], event)
        found.append(event)
    assert [e["sequence_number"] for e in found] == list(range(len(found)))
    return found


def text_of(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"])


async def test_text_input_answers_as_a_response_object(api: InProcess) -> None:
    api.openai.enqueue(Say("Photosynthesis makes sugar."))
    response = await api.post("/v1/responses", {"model": "gpt-4o-mini", "input": "Explain it",
                                                "metadata": {"course": "bio-1"}})
    body = response.json()
    check("Response", body)
    assert response.headers["x-learnx-route"] == "openai/gpt-4o-mini"
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert (body["status"], body["model"], body["metadata"]) == \
        ("completed", "gpt-4o-mini", {"course": "bio-1"})
    (message,) = body["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_")
    assert message["content"][0]["type"] == "output_text"
    assert text_of(body) == "Photosynthesis makes sugar."
    assert {k: body["usage"][k] for k in ("input_tokens", "output_tokens", "total_tokens")} == \
        {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}
    assert body["route"]["cost_usd"] == round((2 * 0.15 + 3 * 0.60) / 1e6, 10)


async def test_instructions_and_input_items_become_the_conversation(api: InProcess) -> None:
    await create(api, instructions="Be brief.", input=[
        {"role": "developer", "content": "Answer as a tutor."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is "},
                                     {"type": "input_text", "text": "2+2?"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_7", "name": "add", "arguments": '{"a":2,"b":2}'},
        {"type": "function_call_output", "call_id": "call_7", "output": "4"},
    ])
    (_, params), = api.openai.calls
    assert params.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer as a tutor."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_7", "type": "function",
             "function": {"name": "add", "arguments": '{"a":2,"b":2}'}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": "4"},
    ]


async def test_settings_reach_the_model_and_are_echoed(api: InProcess) -> None:
    body = await create(api, max_output_tokens=50, temperature=0.2, top_p=0.9, tools=[WEATHER],
                        tool_choice={"type": "function", "name": "get_weather"},
                        parallel_tool_calls=False)
    (_, params), = api.openai.calls
    assert (params.max_tokens, params.temperature, params.top_p) == (50, 0.2, 0.9)
    assert [(t.name, t.description, t.parameters) for t in params.tools] == \
        [("get_weather", WEATHER["description"], WEATHER["parameters"])]
    assert (params.tool_choice, params.parallel_tool_calls) == ("get_weather", False)
    assert (body["max_output_tokens"], body["temperature"], body["top_p"]) == (50, 0.2, 0.9)
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["tools"][0]["name"] == "get_weather"


async def test_a_json_schema_format_reaches_the_model_and_is_echoed(api: InProcess) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    body = await create(api, text={"format": {"type": "json_schema", "name": "a", "schema": schema}})
    (_, params), = api.openai.calls
    assert params.json_schema == schema
    assert body["text"]["format"]["schema"] == schema


async def test_json_object_asks_for_any_json_object(api: InProcess) -> None:
    await create(api, text={"format": {"type": "json_object"}})
    assert api.openai.calls[0][1].json_schema == {}


async def test_tool_calls_are_function_call_items(api: InProcess) -> None:
    api.openai.enqueue(Call((("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')),
                            text="Checking."))
    body = await create(api, tools=[WEATHER])
    message, first, second = body["output"]
    assert message["type"] == "message"
    assert text_of(body) == "Checking."
    assert (first["type"], first["call_id"], first["name"], first["arguments"]) == \
        ("function_call", "call_0", "get_weather", '{"city": "Paris"}')
    assert second["arguments"] == '{"city": "Rome"}' and first["id"].startswith("fc_")
    assert body["status"] == "completed"


async def test_a_stream_sends_the_semantic_events_in_order(api: InProcess) -> None:
    api.openai.enqueue(Say("one two"))
    found = await events(api)
    assert [e["type"] for e in found] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert found[0]["response"]["status"] == "in_progress" and found[0]["response"]["output"] == []
    assert "".join(e["delta"] for e in found if e["type"] == "response.output_text.delta") == \
        "one two"
    completed = found[-1]["response"]
    assert text_of(completed) == "one two" and completed["usage"]["output_tokens"] == 2
    assert completed["id"] == found[0]["response"]["id"]
    assert completed["route"]["provider"] == "openai"


async def test_a_streamed_tool_call_sends_argument_deltas(api: InProcess) -> None:
    api.openai.enqueue(Call())
    found = await events(api, tools=[WEATHER])
    assert [e["type"] for e in found][2:] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    done = found[-3]
    assert (done["name"], done["arguments"]) == ("get_weather", '{"city": "Paris"}')
    assert found[-2]["item"]["status"] == "completed"


async def test_max_output_tokens_reached_is_an_incomplete_response(api: InProcess) -> None:
    api.openai.enqueue(Say("cut short", finish_reason="length"), Say("cut short",
                                                                     finish_reason="length"))
    body = await create(api, max_output_tokens=2)
    assert (body["status"], body["incomplete_details"]) == \
        ("incomplete", {"reason": "max_output_tokens"})
    assert body["output"][0]["status"] == "incomplete"
    found = await events(api, max_output_tokens=2)
    assert found[-1]["type"] == "response.incomplete"


async def test_a_failure_mid_stream_ends_with_an_error_and_response_failed(api: InProcess) -> None:
    down = ProviderError("HTTP 503", provider="x", model="y", upstream_status=503)
    api.openai.enqueue(Cut("The first "))
    api.anthropic.enqueue(down, down)
    found = await events(api, model="gpt-4o", user="unlucky")  # large: openai, then anthropic
    error, failed = found[-2:]
    assert error["type"] == "error" and error["code"] == "all_providers_failed"
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error"
    (record,) = await api.records("unlucky")
    assert (record["operation"], record["outcome"], record["status"]) == ("responses", "error", 503)


async def test_a_failed_provider_falls_back_and_the_route_says_so(api: InProcess) -> None:
    api.openai.enqueue(ProviderError("HTTP 503", provider="openai", model="gpt-4o-mini",
                                     upstream_status=503))
    body = await create(api)
    assert body["route"]["provider"] == "local"
    assert body["route"]["path"][0].startswith("openai/gpt-4o-mini (failed")


async def test_a_stream_cut_midway_goes_on_in_the_same_message(api: InProcess) -> None:
    api.openai.enqueue(Cut("The first "))
    found = await events(api)
    text = "".join(e["delta"] for e in found if e["type"] == "response.output_text.delta")
    assert text == "The first The fake engine explains it well."
    assert sum(e["type"] == "response.output_item.added" for e in found) == 1
    assert len(found[-1]["response"]["route"]["path"]) == 2


async def test_a_json_answer_cut_midway_is_answered_whole_by_the_next_model(api: InProcess) -> None:
    api.openai.enqueue(Cut('{"answer": '))
    body = await create(api, text={"format": {"type": "json_object"}})
    (message,) = body["output"]
    assert json.loads(message["content"][0]["text"]) == {}  # the fake engine's whole object
    assert body["model"] == "smollm2-135m" and body["route"]["provider"] == "local"


@pytest.mark.parametrize("model, provider", [("smollm2-135m", "local"),
                                             ("claude-haiku", "anthropic")])
async def test_every_provider_serves_responses(api: InProcess, model: str, provider: str) -> None:
    body = await create(api, model=model)
    assert body["route"]["provider"] == provider and text_of(body)
    found = await events(api, model=model)
    assert found[-1]["type"] == "response.completed"


async def test_a_request_leaves_one_ledger_record_named_responses(api: InProcess) -> None:
    api.openai.enqueue(Say("one two three"))
    await create(api, user="ada")
    await events(api, user="ada")
    records = await api.records("ada")
    assert [(r["operation"], r["streamed"], r["status"]) for r in records] == \
        [("responses", 0, 200), ("responses", 1, 200)]
    assert records[0]["cost_usd"] == pytest.approx((1 * 0.15 + 3 * 0.60) / 1e6)  # "Hi": 1 word


@pytest_asyncio.fixture(loop_scope="function")
async def limited(tmp_path: Any):
    running = start(config(tmp_path, budgets={"users": {"strict": {
        "daily_usd": 0.000001, "on_exhausted": "refuse"}}}, rate_limits={"user_requests_per_minute": 1}))
    yield running
    await running.close()


async def test_budgets_and_rate_limits_apply(limited: InProcess) -> None:
    over = await limited.post("/v1/responses", {"model": "gpt-4o", "input": "Hi", "user": "strict"})
    assert over.status_code == 402
    statuses = [(await limited.post("/v1/responses", {"model": "small", "input": "Hi",
                                                      "user": "eager"})).status_code
                for _ in range(2)]
    assert statuses == [200, 429]


@pytest.mark.parametrize("extra, param", [
    ({"store": True}, "store"),
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"background": True}, "background"),
    ({"reasoning": {"effort": "low"}}, "reasoning"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"seed": 3}, "seed"),
    ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER, WEATHER]}, "tools.1.name"),
    ({"tools": [{**WEATHER, "parameters": {"type": "object", "properties": {"a": {"foo": 1}}}}]},
     "tools.0.parameters.properties.a.foo"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input.0.content.0"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0.type"),
    ({"input": [{"role": "tool", "content": "4"}]}, "input.0.role"),
    ({"input": [{"type": "function_call_output", "call_id": "call_9", "output": "4"}]},
     "input.0.call_id"),
    ({"max_output_tokens": 10**9}, "max_output_tokens"),
    ({"input": []}, "input"),
    ({"input": [{"role": ["user"], "content": "Hi"}]}, "input.0.role"),
    ({"input": [{"type": "function_call_output", "call_id": ["x"], "output": "4"}]},
     "input.0.call_id"),
    ({"input": [{"type": {"a": 1}}]}, "input.0.type"),
])
async def test_what_the_stateless_subset_cannot_honour_is_a_400_naming_it(
        api: InProcess, extra: dict[str, Any], param: str) -> None:
    response = await api.post("/v1/responses", {"model": "gpt-4o-mini", "input": "Hi", **extra})
    assert response.status_code == 400, response.text
    check("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == param
    assert not api.openai.calls


async def test_store_false_and_advisory_parameters_are_accepted(api: InProcess) -> None:
    await create(api, store=False, user="ada", safety_identifier="h-1", prompt_cache_key="k",
                 truncation="disabled", include=[], service_tier="auto",
                 stream_options={"include_obfuscation": False})


@pytest_asyncio.fixture(loop_scope="function")
async def sdk(api: InProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK, calling the API in process."""
    transport = httpx2.ASGITransport(app=build_api(api.services))
    async with openai.AsyncOpenAI(base_url="http://in-process/v1", api_key=KEY, max_retries=0,
                                  http_client=httpx2.AsyncClient(transport=transport)) as client:
        yield client


async def test_the_official_sdk_creates_and_streams_responses(api: InProcess,
                                                              sdk: openai.AsyncOpenAI) -> None:
    api.openai.enqueue(Say("Tides follow the moon."), Say("Tides follow the moon."))
    response = await sdk.responses.create(model="gpt-4o-mini", input="Explain tides.")
    assert response.output_text == "Tides follow the moon."
    assert response.usage is not None and response.usage.output_tokens == 4
    async with sdk.responses.stream(model="gpt-4o-mini", input="Explain tides.") as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Tides follow the moon."


async def test_the_official_sdk_runs_a_tool_call_round_trip(api: InProcess,
                                                            sdk: openai.AsyncOpenAI) -> None:
    api.openai.enqueue(Call(), Say("It is sunny in Paris."))
    async with sdk.responses.stream(model="gpt-4o-mini", input="Weather in Paris?",
                                    tools=[WEATHER]) as stream:
        first = await stream.get_final_response()
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    answer = await sdk.responses.create(model="gpt-4o-mini", tools=[WEATHER], input=[
        {"role": "user", "content": "Weather in Paris?"}, *[item.model_dump() for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert answer.output_text == "It is sunny in Paris."
    tool_turn = api.openai.calls[-1][1].messages[-1]
    assert tool_turn == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


WORDS = ["message", "function_call", "function_call_output", "user", "assistant", "tool",
         "input_text", "input_image", "call_0", "f", "{}"]
VALUES = st.recursive(st.none() | st.integers() | st.sampled_from(WORDS),
                      lambda inner: st.lists(inner, max_size=2)
                      | st.dictionaries(st.sampled_from(["type", "text"]), inner, max_size=2),
                      max_leaves=4)
ITEM = st.dictionaries(st.sampled_from(["type", "role", "content", "call_id", "name", "arguments",
                                        "output"]), VALUES, max_size=5)


@given(items=st.lists(ITEM, max_size=4))
@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_input_items_are_answered_or_refused_never_a_server_error(
        api: InProcess, items: list[dict[str, Any]]) -> None:
    response = await api.post("/v1/responses", {"model": "smollm2-135m", "input": items})
    assert response.status_code in (200, 400), response.text


async def test_the_official_sdk_sees_a_failed_stream_end_with_response_failed(
        api: InProcess, sdk: openai.AsyncOpenAI) -> None:
    down = ProviderError("HTTP 503", provider="x", model="y", upstream_status=503)
    api.openai.enqueue(Cut("The first "))
    api.anthropic.enqueue(down, down)
    async with sdk.responses.stream(model="gpt-4o", input="Hi") as stream:
        found = [event async for event in stream]
    assert [e.type for e in found[-2:]] == ["error", "response.failed"]
    assert found[-1].response.error is not None and found[-1].response.status == "failed"
