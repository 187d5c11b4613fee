"""Tool calling in process: what a caller sends (tools, tool_choice, tool turns) and how it is
checked, what a provider's calls become on the wire (every body and chunk valid against OpenAI's
schemas), which models serve a tools request, fallback and accounting, over scripted providers and
the fake local engine."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from core.generation import Delta, GenerationParams, TokenUsage, Tool, ToolCall, ToolCallDelta
from core.pricing import estimate_tokens, prompt_estimate
from router.run.attempts import Attempt, Route
from router.run.policy import Candidate
from tests.fakes.catalog import MODELS
from tests.fakes.inprocess import InProcess, config, start
from tests.fakes.scripted import Cut, Say, ScriptedProvider
from tests.openai_schemas import check, sse_data

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather now in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
COURSES = {"type": "function", "function": {
    "name": "search_courses", "parameters": {
        "type": "object", "properties": {"topic": {"type": "string"},
                                         "level": {"type": "integer", "minimum": 1,
                                                   "maximum": 5}}}}}
ASK = [{"role": "user", "content": "Weather in Paris, and algebra courses?"}]
PARIS = ToolCall("call_paris", "get_weather", '{"city": "Paris"}')
ALGEBRA = ToolCall("call_algebra", "search_courses", '{"topic": "algebra", "level": 1}')


def valid_chunks(sse: str) -> list[dict[str, Any]]:
    """A chat stream's chunks, each checked against OpenAI's schema (an error event as an error)."""
    chunks = sse_data(sse)
    for chunk in chunks:
        check("ErrorResponse" if "error" in chunk else "CreateChatCompletionStreamResponse", chunk)
    return chunks


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": ASK, "tools": [WEATHER, COURSES], **fields}


async def completion(api: InProcess, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post("/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    check("CreateChatCompletionResponse", response.json())
    return dict(response.json())


async def stream(api: InProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = await api.post("/v1/chat/completions", {**body, "stream": True,
                                                       "stream_options": {"include_usage": True}})
    assert response.status_code == 200, response.text
    return valid_chunks(response.text)


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def finishes(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["choices"][0]["finish_reason"] for c in chunks
            if c.get("choices") and c["choices"][0]["finish_reason"]]


# What the caller gets


async def test_a_call_is_a_message_with_tool_calls_and_no_content(api: InProcess) -> None:
    api.openai.enqueue(Say("", tool_calls=(PARIS,)))
    body = await completion(api, chat())
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {"role": "assistant", "content": None, "refusal": None,
                                 "tool_calls": [{"id": "call_paris", "type": "function", "function": {
                                     "name": "get_weather", "arguments": '{"city": "Paris"}'}}]}


async def test_parallel_calls_keep_their_order_and_text_beside_them_is_kept(
        api: InProcess) -> None:
    api.openai.enqueue(Say("Let me check.", tool_calls=(PARIS, ALGEBRA)))
    message = (await completion(api, chat()))["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in message["tool_calls"]] == [
        ("call_paris", "get_weather", {"city": "Paris"}),
        ("call_algebra", "search_courses", {"topic": "algebra", "level": 1})]


async def test_a_streamed_call_is_chunked_as_openai_streams_it(api: InProcess) -> None:
    api.openai.enqueue(Say("", tool_calls=(PARIS, ALGEBRA)))
    found = await stream(api, chat())
    pieces = [call for delta in deltas(found) for call in delta.get("tool_calls", [])]
    firsts = [p for p in pieces if "id" in p]
    assert firsts == [
        {"index": 0, "id": "call_paris", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}},
        {"index": 1, "id": "call_algebra", "type": "function",
         "function": {"name": "search_courses", "arguments": ""}}]
    rest = [p for p in pieces if "id" not in p]
    assert all(set(p) == {"index", "function"} and set(p["function"]) == {"arguments"}
               for p in rest)
    for index, call in enumerate((PARIS, ALGEBRA)):
        assert "".join(p["function"]["arguments"] for p in rest if p["index"] == index) == \
            call.arguments
    assert finishes(found) == ["tool_calls"]
    assert found[-1]["usage"]["completion_tokens"] > 0


async def test_the_request_reaches_the_provider_in_generation_terms(api: InProcess) -> None:
    await completion(api, chat(tool_choice={"type": "function", "function": {"name": "get_weather"}},
                               parallel_tool_calls=False))
    (_, params), = api.openai.calls
    assert [t.name for t in params.tools] == ["get_weather", "search_courses"]
    assert params.tools[0].description == "The weather now in a city."
    assert params.tools[1].parameters["properties"]["level"]["maximum"] == 5
    assert (params.tool_choice, params.parallel_tool_calls) == ("get_weather", False)


async def test_a_function_named_like_a_mode_is_called_when_named(api: InProcess) -> None:
    auto = {"type": "function", "function": {"name": "auto"}}
    await completion(api, chat(tools=[WEATHER, auto], tool_choice=auto))
    await completion(api, chat(tools=[WEATHER, auto], tool_choice="auto"))
    named, mode = (params for _, params in api.openai.calls)
    assert ([t.name for t in named.tools], named.tool_choice) == (["auto"], "required")
    assert ([t.name for t in mode.tools], mode.tool_choice) == (["get_weather", "auto"], "auto")


async def test_a_multi_turn_exchange_sends_calls_and_results_back(api: InProcess) -> None:
    api.openai.enqueue(Say("", tool_calls=(PARIS,)), Say("It is sunny in Paris."))
    first = (await completion(api, chat()))["choices"][0]["message"]
    result = {"role": "tool", "tool_call_id": first["tool_calls"][0]["id"], "content": "18 C, sunny"}
    second = await completion(api, chat(messages=[*ASK, first, result]))
    assert second["choices"][0]["message"]["content"] == "It is sunny in Paris."
    _, params = api.openai.calls[1]
    assert params.messages[1:] == [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_paris", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": "18 C, sunny", "tool_call_id": "call_paris"}]


# What the caller must fix


BAD_PARAMETERS = {"type": "object", "properties": {"tags": {"type": "array", "maxItems": 10_000}}}


@pytest.mark.parametrize(("fields", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]},
     "tools.0.function.name"),
    ({"tools": [WEATHER, WEATHER]}, "tools.1.function.name"),
    ({"tools": [WEATHER] * 129}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": BAD_PARAMETERS}}]},
     "tools.0.function.parameters.properties.tags.maxItems"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     "tools.0.function.parameters.type"),
    ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
     "tool_choice.function.name"),
    ({"tools": None, "tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
])
async def test_tool_definitions_and_choices_the_caller_must_fix(
        api: InProcess, fields: dict[str, Any], param: str) -> None:
    response = await api.post("/v1/chat/completions", chat(**fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"].startswith(param), error
    check("ErrorResponse", response.json())


CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


@pytest.mark.parametrize(("messages", "param", "says"), [
    ([*ASK, RESULT], "messages.1.tool_call_id", "is not a call of the assistant turn"),
    ([*ASK, CALL], "messages", "not all answered"),
    ([*ASK, CALL, *ASK], "messages.2", "not all answered"),
    ([*ASK, CALL, RESULT, RESULT], "messages.3.tool_call_id", "is not a call"),
    ([*ASK, CALL, RESULT, CALL, RESULT], "messages.3.tool_calls.0.id", "used twice"),
    ([*ASK, CALL, {"role": "tool", "content": "x"}], "messages.2.tool_call_id", "must name"),
    ([{**ASK[0], "tool_calls": CALL["tool_calls"]}], "messages.0.tool_calls", "only assistant"),
    ([*ASK, {**CALL, "tool_calls": [{**CALL["tool_calls"][0], "function": {
        "name": "get_weather", "arguments": "{'city'"}}]}, RESULT],
     "messages.1.tool_calls.0.function.arguments", "JSON object"),
])
async def test_a_conversation_whose_tool_turns_do_not_fit_is_refused(
        api: InProcess, messages: list[dict[str, Any]], param: str, says: str) -> None:
    response = await api.post("/v1/chat/completions", chat(messages=messages))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], says in error["message"]) == (param, True), error


async def test_a_conversation_with_calls_needs_the_tools_it_called(api: InProcess) -> None:
    response = await api.post("/v1/chat/completions", chat(tools=None, messages=[*ASK, CALL, RESULT]))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tools"


# Which models serve a tools request


async def test_tool_choice_auto_is_served_by_models_that_decide_when_to_call(
        api: InProcess) -> None:
    """The tier's free local model calls tools only when a call is required: an auto request for
    it goes to a hosted model of its tier, and the route says why."""
    response = await api.post("/v1/chat/completions", chat(model="smollm2-135m"))
    route = response.json()["route"]
    assert route["provider"] == "openai"
    assert "smollm2-135m cannot serve tool_choice 'auto'" in route["reason"]
    assert api.engine.generations == 0


async def test_without_a_model_that_decides_an_auto_request_is_a_503_saying_what_to_do(
        tmp_path: Any) -> None:
    api = start(config(tmp_path), hosted=False)
    try:
        response = await api.post("/v1/chat/completions", chat(model="small"))
        assert response.status_code == 503
        message = response.json()["error"]["message"]
        assert "smollm2-135m (calls tools only when tool_choice is 'required'" in message
        assert "send tool_choice 'required' or name a function" in message
        none = await api.post("/v1/chat/completions", chat(model="small", tool_choice="none"))
        assert none.json()["choices"][0]["message"]["content"]  # text, from the local model
    finally:
        await api.close()


async def test_the_local_model_makes_a_required_call_with_arguments_that_fit(
        api: InProcess) -> None:
    named = {"type": "function", "function": {"name": "search_courses"}}
    body = await completion(api, chat(model="small", tool_choice=named))
    assert body["route"]["provider"] == "local"
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "search_courses"
    assert json.loads(call["function"]["arguments"]) == {"topic": "x", "level": 1}
    found = await stream(api, chat(model="small", tool_choice="required"))
    assert finishes(found) == ["tool_calls"]


# Fallback and accounting


async def test_a_call_cut_midway_starts_over_on_the_next_model(api: InProcess) -> None:
    api.openai.enqueue(Say("", tool_calls=(PARIS,), cut_in_calls=True))
    api.anthropic.enqueue(Say("", tool_calls=(ALGEBRA,)))
    body = await completion(api, chat())
    assert [c["id"] for c in body["choices"][0]["message"]["tool_calls"]] == ["call_algebra"]
    assert body["route"]["provider"] == "anthropic"
    _, params = api.anthropic.calls[0]
    assert params.messages == [{"role": "user", "content": ASK[0]["content"]}]  # not continued


async def test_a_streamed_call_cut_midway_ends_with_an_error_not_text(api: InProcess) -> None:
    api.openai.enqueue(Say("", tool_calls=(PARIS,), cut_in_calls=True))
    found = await stream(api, chat())
    assert found[-1]["error"]["type"] == "upstream_error"
    assert "a tool call broke off mid-stream" in found[-1]["error"]["message"]
    assert finishes(found) == [] and not api.anthropic.calls


async def test_text_cut_before_any_call_is_continued_with_the_tools(api: InProcess) -> None:
    api.openai.enqueue(Cut("Let me check. "))
    api.anthropic.enqueue(Say("", tool_calls=(PARIS,)))
    body = await completion(api, chat(preferred_providers=["openai", "anthropic"]))
    _, params = api.anthropic.calls[0]
    assert (len(params.tools), params.tool_choice) == (2, "auto")
    assert params.messages[-2] == {"role": "assistant", "content": "Let me check. "}
    message = body["choices"][0]["message"]
    assert (message["content"], message["tool_calls"][0]["id"]) == ("Let me check. ", "call_paris")


async def test_a_tool_call_request_is_metered_and_billed_like_any_other(api: InProcess) -> None:
    api.openai.enqueue(Say("", tool_calls=(PARIS,)))
    body = await completion(api, chat(user="learner-7"))
    (record,) = await api.records("learner-7")
    assert (record["outcome"], record["provider"], record["model"]) == (
        "success", "openai", "gpt-4o-mini")
    assert record["output_tokens"] == body["usage"]["completion_tokens"] > 0
    assert record["cost_usd"] == body["route"]["cost_usd"] > 0


def test_tool_definitions_and_calls_count_in_the_prompt_estimate() -> None:
    plain = GenerationParams(ASK, 16)
    tools = (Tool("get_weather", "The weather now in a city.",
                  WEATHER["function"]["parameters"]),)  # type: ignore[index]
    with_tools = replace(plain, tools=tools)
    called = replace(with_tools, messages=[*ASK, {**CALL, "content": ""}, RESULT])
    assert prompt_estimate(plain) < prompt_estimate(with_tools) < prompt_estimate(called)
    assert prompt_estimate(with_tools) - prompt_estimate(plain) >= \
        estimate_tokens(json.dumps(WEATHER["function"]["parameters"]))


def test_a_call_the_provider_did_not_count_is_billed_by_its_arguments() -> None:
    """A stream cut short (or a client gone) is billed what was generated: a call's name and
    arguments too, estimated when the provider counts no tokens per piece (Anthropic)."""
    route = Route(ScriptedProvider("anthropic"), Candidate(MODELS[2], 0.0, ""))
    attempt = Attempt(route, prompt_estimate=7)
    arguments = '{"city": "Paris", "unit": "celsius"}'
    attempt.count(Delta("", tool_calls=(ToolCallDelta(0, "toolu_1", "get_weather"),)))
    attempt.count(Delta("", tool_calls=(ToolCallDelta(0, arguments=arguments),)))
    assert attempt.billed() == TokenUsage(7, estimate_tokens("get_weather" + arguments))
