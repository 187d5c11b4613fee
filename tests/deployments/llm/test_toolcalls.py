"""Local tool calls, the pure part: the schema a required call follows, the conversation as text
turns, and generated call JSON turned into OpenAI-style call deltas however it is split."""

from __future__ import annotations

import itertools
import json

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from core.generation import Delta, GenerationParams, Tool, ToolCallAssembler
from deployments.llm.toolcalls import TOOLS_PROMPT, ToolCallStream, call_schema, text_messages, to_calls

WEATHER = Tool("get_weather", "The weather now.", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
PLACES = Tool("plan_trip", "Plan a trip.", {
    "type": "object", "$defs": {"place": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}},
    "properties": {"stops": {"type": "array", "items": {"$ref": "#/$defs/place"}}},
    "required": ["stops"]})
ASK = [{"role": "user", "content": "Plan a trip to Oslo."}]
GENERATED = '{ "name": "plan_trip", "arguments": {"stops": [{"city": "Oslo \\"}{ \\\\"}]} }'


def required(choice: str = "required", *tools: Tool) -> GenerationParams:
    return GenerationParams(ASK, 64, tools=tools or (WEATHER, PLACES), tool_choice=choice)


def test_a_required_call_is_one_of_the_tools_with_its_own_arguments() -> None:
    schema = call_schema(required())
    jsonschema.validate(json.loads(GENERATED), schema)
    jsonschema.validate({"name": "get_weather", "arguments": {"city": "Rome"}}, schema)
    for wrong in ({"name": "get_weather", "arguments": {"stops": []}},
                  {"name": "get_time", "arguments": {}}, [{"name": "get_weather"}]):
        assert not jsonschema.Draft202012Validator(schema).is_valid(wrong)


def test_a_named_call_is_that_tool_only_and_its_defs_move_to_the_root() -> None:
    schema = call_schema(required("plan_trip"))
    assert schema["properties"]["name"] == {"const": "plan_trip"}
    assert schema["$defs"] == {"tool0-place": PLACES.parameters["$defs"]["place"]}
    items = schema["properties"]["arguments"]["properties"]["stops"]["items"]
    assert items == {"$ref": "#/$defs/tool0-place"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(GENERATED) - 1), max_size=12))
def test_generated_call_json_becomes_one_call_however_it_is_split(cuts: list[int]) -> None:
    stream, calls, deltas = ToolCallStream(), ToolCallAssembler(), []
    bounds = [0, *sorted(set(cuts)), len(GENERATED)]
    for start, end in itertools.pairwise(bounds):
        deltas.extend(stream.feed(GENERATED[start:end]))
    calls.add(tuple(deltas))
    (call,) = calls.calls()
    assert call.name == "plan_trip" and call.id.startswith("call_")
    assert json.loads(call.arguments) == {"stops": [{"city": 'Oslo "}{ \\'}]}
    assert stream.complete
    assert deltas[0].id is not None and all(d.id is None and d.name is None for d in deltas[1:])


def test_calls_are_numbered_and_a_call_cut_short_is_not_complete() -> None:
    stream = ToolCallStream()
    pieces = stream.feed('[{"name": "get_weather", "arguments": {"city": "Rome"}}, '
                         '{"name": "get_weather", "arguments": {"city": "Os')
    assert [(p.index, p.name, p.arguments) for p in pieces] == [
        (0, "get_weather", '{"city": "Rome"}'), (1, "get_weather", '{"city": "Os')]
    assert not stream.complete


def test_a_finished_generation_of_a_whole_call_finishes_with_tool_calls() -> None:
    stream = ToolCallStream()
    assert to_calls(Delta(GENERATED[:30]), stream).finish_reason is None
    assert to_calls(Delta(GENERATED[30:], finish_reason="stop"), stream).finish_reason == \
        "tool_calls"
    cut = ToolCallStream()
    assert to_calls(Delta(GENERATED[:40], finish_reason="length"), cut).finish_reason == "length"


def test_tools_calls_and_results_become_text_turns() -> None:
    messages = [{"role": "system", "content": "Be brief."}, *ASK,
                {"role": "assistant", "content": "", "tool_calls": [{
                    "id": "call_1", "type": "function", "function": {
                        "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "4 C, snow"}]
    turns = text_messages(GenerationParams(messages, 64, tools=(WEATHER,), tool_choice="required"))
    assert turns[0]["role"] == "system"
    assert turns[0]["content"].startswith(f"Be brief.\n\n{TOOLS_PROMPT}\n- get_weather: The weather")
    assert turns[2:] == [
        {"role": "assistant", "content": 'I called get_weather with {"city": "Oslo"}.'},
        {"role": "user", "content": "Here is what get_weather returned: 4 C, snow"}]
    plain = text_messages(GenerationParams(messages, 64, tools=(WEATHER,), tool_choice="none"))
    assert plain[0] == {"role": "system", "content": "Be brief."}
