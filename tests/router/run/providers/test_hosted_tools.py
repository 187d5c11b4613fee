"""Tool calls through the hosted adapters, in process against the wire fakes: OpenAI's passed
through, Anthropic's translated both ways (tools, tool_choice, tool_use / tool_result blocks,
streamed input_json_delta), streamed and parallel, in a multi-turn exchange."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from core.generation import GenerationParams, Tool, ToolCall
from router.run.providers.anthropic import to_anthropic
from router.run.providers.openai import to_openai
from tests.deltas import collect
from tests.fakes import Call, FakeAnthropic, FakeOpenAI, Reply
from tests.openai_schemas import check
from tests.router.run.providers.test_hosted import anthropic_provider, openai_provider
from tests.router.services.test_tools import valid_chunks

WEATHER = Tool("get_weather", "The weather now in a city.", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
CLOCK = Tool("get_time", "The time now.", {"type": "object", "properties": {}})
PARIS = Call("get_weather", '{"city": "Paris"}', id="call_paris")
OSLO = Call("get_weather", '{"city": "Oslo"}', id="call_oslo")
ASK = {"role": "user", "content": "Weather in Paris and Oslo?"}
CALLED = {"role": "assistant", "content": "Checking.", "tool_calls": [
    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
    for c in (PARIS, OSLO)]}
RESULTS = [{"role": "tool", "tool_call_id": "call_paris", "content": "18 C"},
           {"role": "tool", "tool_call_id": "call_oslo", "content": "4 C"}]
FOLLOW_UP = {"role": "user", "content": "And in Fahrenheit?"}


def params(*messages: dict[str, Any], choice: str = "auto", parallel: bool = True,
           tools: tuple[Tool, ...] = (WEATHER, CLOCK)) -> GenerationParams:
    return GenerationParams(list(messages or [ASK]), 64, tools=tools, tool_choice=choice,
                            parallel_tool_calls=parallel)


def calls(*found: Call) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(c.id, c.name, c.arguments) for c in found)


# OpenAI: passed through


def test_openai_gets_tools_and_tool_choice_as_it_defines_them() -> None:
    request = to_openai("gpt-4o-mini", params(choice="get_weather", parallel=False))
    assert request["tools"][0] == {"type": "function", "function": {
        "name": "get_weather", "description": "The weather now in a city.",
        "parameters": WEATHER.parameters}}
    assert request["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert request["parallel_tool_calls"] is False
    assert to_openai("m", params(choice="required"))["tool_choice"] == "required"
    assert "tools" not in to_openai("m", GenerationParams([ASK], 5))


def test_openai_gets_calls_and_results_back_as_it_sent_them() -> None:
    only_calls = {**CALLED, "content": ""}
    messages = to_openai("m", params(ASK, only_calls, *RESULTS))["messages"]
    assert messages[1] == {**only_calls, "content": None}
    assert messages[2:] == RESULTS


@pytest.mark.parametrize("streamed", [True, False])
async def test_the_fake_openai_speaks_tool_calls_in_openai_schema(
        fake_openai: FakeOpenAI, streamed: bool) -> None:
    fake_openai.enqueue(Reply(text="", tool_calls=(PARIS, OSLO)))
    response = httpx.post(f"{fake_openai.url}/v1/chat/completions", json={
        "model": "gpt-4o-mini", "messages": [ASK], "stream": streamed,
        "stream_options": {"include_usage": True}})
    if streamed:
        valid_chunks(response.text)
    else:
        check("CreateChatCompletionResponse", response.json())


async def test_openai_parallel_calls_stream_into_whole_calls(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(text="", tool_calls=(PARIS, OSLO), prompt_tokens=30,
                              completion_tokens=12))
    provider = openai_provider(fake_openai)
    deltas = [d async for d in provider.stream("gpt-4o-mini", params())]
    assert [(c.index, c.id, c.name) for d in deltas for c in d.tool_calls if c.id] == [
        (0, "call_paris", "get_weather"), (1, "call_oslo", "get_weather")]
    completion = await collect(_replay(deltas))
    assert completion.tool_calls == calls(PARIS, OSLO)
    assert (completion.text, completion.finish_reason) == ("", "tool_calls")
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (30, 12)
    sent = fake_openai.requests[0].body
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "get_time"]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("auto", True)


async def test_openai_multi_turn_exchange(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(text="It is 64 F in Paris and 39 F in Oslo."))
    provider = openai_provider(fake_openai)
    completion = await collect(provider.stream("gpt-4o-mini", params(
        ASK, CALLED, *RESULTS, FOLLOW_UP)))
    assert completion.text == "It is 64 F in Paris and 39 F in Oslo."
    sent = fake_openai.requests[0].body["messages"]
    assert sent[1]["tool_calls"] == CALLED["tool_calls"] and sent[2:4] == RESULTS


# Anthropic: translated both ways


def test_anthropic_gets_tools_with_input_schemas() -> None:
    request = to_anthropic("claude", params())
    assert request["tools"] == [
        {"name": "get_weather", "description": "The weather now in a city.",
         "input_schema": WEATHER.parameters},
        {"name": "get_time", "description": "The time now.", "input_schema": CLOCK.parameters}]


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", True, {"type": "auto"}),
    ("required", True, {"type": "any"}),
    ("get_time", True, {"type": "tool", "name": "get_time"}),
    ("none", True, {"type": "none"}),
    ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("get_time", False, {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True}),
])
def test_anthropic_tool_choice(choice: str, parallel: bool, expected: dict[str, Any]) -> None:
    assert to_anthropic("claude", params(choice=choice, parallel=parallel))["tool_choice"] == \
        expected


def test_anthropic_gets_calls_as_tool_use_and_results_as_one_user_turn() -> None:
    request = to_anthropic("claude", params(ASK, CALLED, *RESULTS, FOLLOW_UP))
    assert request["messages"] == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_paris", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_oslo", "name": "get_weather",
             "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_paris", "content": "18 C"},
            {"type": "tool_result", "tool_use_id": "call_oslo", "content": "4 C"},
            {"type": "text", "text": "And in Fahrenheit?"}]}]


@pytest.mark.parametrize("text", ["", "Let me check both."])
async def test_anthropic_tool_use_streams_as_openai_calls(fake_anthropic: FakeAnthropic,
                                                          text: str) -> None:
    fake_anthropic.enqueue(Reply(text=text, tool_calls=(PARIS, OSLO), prompt_tokens=50,
                                 completion_tokens=20))
    provider = anthropic_provider(base_url=fake_anthropic.url)
    deltas = [d async for d in provider.stream("claude-3-5-haiku-latest", params())]
    firsts = [c for d in deltas for c in d.tool_calls if c.id]
    assert [(c.index, c.name, c.arguments) for c in firsts] == [
        (0, "get_weather", ""), (1, "get_weather", "")]
    assert all(c.id and c.id.startswith("toolu_") for c in firsts)
    completion = await collect(_replay(deltas))
    assert completion.text == text
    assert [(c.name, json.loads(c.arguments)) for c in completion.tool_calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    assert (completion.finish_reason, completion.usage.prompt_tokens,
            completion.usage.completion_tokens) == ("tool_calls", 50, 20)


async def test_an_anthropic_call_without_arguments_gets_an_empty_object(
        fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.enqueue(Reply(text="", tool_calls=(Call("get_time", "{}"),)))
    provider = anthropic_provider(base_url=fake_anthropic.url)
    completion = await collect(provider.stream("claude-3-5-haiku-latest", params(choice="get_time")))
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("get_time", "{}")]
    assert fake_anthropic.requests[0].body["tool_choice"] == {"type": "tool", "name": "get_time"}


async def test_anthropic_multi_turn_exchange(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.enqueue(Reply(text="64 F and 39 F."))
    provider = anthropic_provider(base_url=fake_anthropic.url)
    completion = await collect(provider.stream("claude-3-5-haiku-latest", params(
        ASK, CALLED, *RESULTS, FOLLOW_UP, choice="none")))
    assert (completion.text, completion.finish_reason, completion.tool_calls) == (
        "64 F and 39 F.", "stop", ())
    sent = fake_anthropic.requests[0].body
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["tool_choice"] == {"type": "none"}


async def _replay(deltas: list[Any]) -> Any:
    for delta in deltas:
        yield delta
