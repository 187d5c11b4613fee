"""Tool calling end to end with the official `openai` SDK against the live service: the packaged
SmolLM2 under its grammar, OpenAI and Anthropic through their wire fakes; every body and chunk valid
against OpenAI's published schemas."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import AUTH
from tests.fakes import Call, FakeAnthropic, FakeOpenAI, Reply
from tests.openai_schemas import check
from tests.router.services.test_tools import valid_chunks

LOCAL = "smollm2-135m"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"], "additionalProperties": False}}}
COURSES = {"type": "function", "function": {
    "name": "search_courses", "description": "Search the course catalogue by topic.",
    "parameters": {"type": "object", "properties": {
        "topic": {"type": "string", "maxLength": 40},
        "level": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["topic"], "additionalProperties": False}}}
TOOLS = [WEATHER, COURSES]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


def assert_fits(name: str, arguments: str) -> None:
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


def streamed_calls(stream: Any) -> tuple[dict[int, dict[str, str]], list[str]]:
    """The SDK's chunks put back together: calls by index, and the finish reasons."""
    calls: dict[int, dict[str, str]] = {}
    finishes = []
    for chunk in stream:
        for choice in chunk.choices:
            for piece in choice.delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += piece.id or ""
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return calls, finishes


def raw(url: str, body: dict[str, Any]) -> httpx.Response:
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    return response


def test_the_local_model_calls_a_tool_with_arguments_that_fit_its_schema(openai_client) -> None:
    raw_response = openai_client.chat.completions.with_raw_response.create(
        model=LOCAL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=64,
        temperature=0)
    completion = raw_response.parse()
    assert raw_response.headers["x-learnx-route"] == f"local/{LOCAL}"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert_fits(call.function.name, call.function.arguments)
    assert completion.usage.completion_tokens > 0


def test_the_local_model_streams_a_named_call(openai_client, serve_url: str) -> None:
    named = {"type": "function", "function": {"name": "search_courses"}}
    stream = openai_client.chat.completions.create(
        model=LOCAL, messages=[{"role": "user", "content": "Find me an algebra course."}],
        tools=TOOLS, tool_choice=named, max_tokens=64, temperature=0, stream=True)
    calls, finishes = streamed_calls(stream)
    assert finishes == ["tool_calls"]
    assert [c["name"] for c in calls.values()] == ["search_courses"]
    assert_fits("search_courses", calls[0]["arguments"])
    body = {"model": LOCAL, "messages": ASK, "tools": TOOLS, "tool_choice": named,
            "max_tokens": 64, "stream": True, "stream_options": {"include_usage": True}}
    chunks = valid_chunks(raw(serve_url, body).text)
    first = next(c["choices"][0]["delta"]["tool_calls"][0] for c in chunks
                 if c["choices"] and c["choices"][0]["delta"].get("tool_calls"))
    assert set(first) == {"index", "id", "type", "function"}


def test_the_local_model_answers_from_a_tool_result(openai_client, serve_url: str) -> None:
    call = {"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}
    body = {"model": LOCAL, "max_tokens": 24, "temperature": 0, "tools": TOOLS,
            "tool_choice": "none", "messages": [
                *ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}]}
    response = raw(serve_url, body)
    check("CreateChatCompletionResponse", response.json())
    message = response.json()["choices"][0]["message"]
    assert message["content"] and "tool_calls" not in message


def test_an_auto_request_for_the_local_model_goes_to_a_model_that_decides(
        openai_client, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(text="", tool_calls=(Call("get_weather", '{"city": "Paris"}'),)))
    raw_response = openai_client.chat.completions.with_raw_response.create(
        model=LOCAL, messages=ASK, tools=TOOLS, max_tokens=64)
    assert raw_response.headers["x-learnx-route"] == "openai/gpt-4o-mini"
    assert raw_response.parse().choices[0].message.tool_calls[0].function.name == "get_weather"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-haiku-latest"])
def test_hosted_parallel_calls_then_the_answer_from_their_results(
        openai_client, serve_url: str, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic,
        model: str) -> None:
    fake = fake_openai if model.startswith("gpt") else fake_anthropic
    paris, oslo = Call("get_weather", '{"city": "Paris"}'), Call("get_weather", '{"city": "Oslo"}')
    fake.enqueue(Reply(text="", tool_calls=(paris, oslo)), Reply(text="", tool_calls=(paris, oslo)),
                 Reply(text="Sunny in Paris, snow in Oslo."))
    ask = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
    calls, finishes = streamed_calls(openai_client.chat.completions.create(
        model=model, messages=ask, tools=TOOLS, max_tokens=64, stream=True))
    assert finishes == ["tool_calls"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    body = raw(serve_url, {"model": model, "messages": ask, "tools": TOOLS}).json()
    check("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    results = [{"role": "tool", "tool_call_id": c["id"], "content": text}
               for c, text in zip(message["tool_calls"], ("sunny", "snow"), strict=True)]
    answer = openai_client.chat.completions.create(
        model=model, messages=[*ask, message, *results], tools=TOOLS, max_tokens=64)
    assert answer.choices[0].message.content == "Sunny in Paris, snow in Oslo."
    sent = fake.requests[-1].body["messages"]
    assert len(sent) == (4 if model.startswith("gpt") else 3)  # Anthropic: results in one turn
