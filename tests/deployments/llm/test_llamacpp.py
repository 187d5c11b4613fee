"""The llama.cpp engine on the packaged SmolLM2, in process."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import LlamaCppSettings
from core.generation import (
    GenerationParams,
    InvalidMessages,
    InvalidSchema,
    InvalidTools,
    PromptTooLong,
    RawPromptTooLong,
    RequestRejected,
    TokenUsage,
    Tool,
    ToolCallAssembler,
)
from core.schema import SchemaError, check_schema
from deployments.llm.llamacpp import MAX_GRAMMAR_BYTES, LlamaCppEngine, grammar_schema, render_prompt
from models import find_local_model, resolve_gguf
from tests.deltas import collect


@pytest.fixture(scope="module")
def engine() -> LlamaCppEngine:
    path = resolve_gguf(find_local_model("smollm2-135m"))
    return LlamaCppEngine(path, LlamaCppSettings(n_ctx=1024, n_threads=1))


def ask(text: str, **kwargs) -> GenerationParams:
    return GenerationParams(messages=[{"role": "user", "content": text}], **{
        "max_tokens": 32, "temperature": 0, **kwargs})


async def test_usage_counts_the_prompt_and_every_generated_token(engine: LlamaCppEngine) -> None:
    params = ask("Write a poem about rivers.", max_tokens=12)
    completion = await collect(engine.generate(params))
    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 12
    assert completion.usage.prompt_tokens == len(engine.prompt_tokens(params))


async def test_stream_yields_text_before_the_end(engine: LlamaCppEngine) -> None:
    deltas = [d async for d in engine.generate(ask("Name three planets.", max_tokens=24))]
    assert len(deltas) > 2
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].usage is not None


async def test_stop_sequence_ends_generation_without_emitting_it(engine: LlamaCppEngine) -> None:
    free = await collect(engine.generate(ask("List the numbers 1 to 9, comma separated.")))
    stop = free.text.strip()[2:4] or ","
    stopped = await collect(engine.generate(ask("List the numbers 1 to 9, comma separated.",
                                                stop=[stop])))
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.text
    assert free.text.startswith(stopped.text)


async def test_json_constraint_yields_json(engine: LlamaCppEngine) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}},
              "required": ["name"], "additionalProperties": False}
    completion = await collect(engine.generate(ask("Invent a pet name.", max_tokens=48,
                                                   json_schema=schema)))
    assert completion.finish_reason == "stop"
    assert set(json.loads(completion.text)) == {"name"}


async def test_prompt_longer_than_context_is_refused(engine: LlamaCppEngine) -> None:
    with pytest.raises(PromptTooLong, match="context is 1024 tokens"):
        await collect(engine.generate(ask("word " * 2000)))


async def test_a_raw_prompt_is_continued_without_the_chat_template(engine: LlamaCppEngine) -> None:
    raw = GenerationParams([], max_tokens=8, temperature=0, prompt="<|im_start|>The capital of")
    tokens = engine.prompt_tokens(raw)
    templated = engine.prompt_tokens(ask("The capital of"))
    assert engine._llm.detokenize(tokens).decode() == "<|im_start|>The capital of"
    assert len(tokens) < len(templated)  # no system prompt, no role markers
    assert tokens.count(engine._llm.tokenize(b"<|im_start|>", add_bos=False, special=True)[0]) \
        == 0  # a special token spelled in the prompt is text, not a marker
    completion = await collect(engine.generate(raw))
    assert completion.usage == TokenUsage(len(tokens), 8)
    assert completion.finish_reason == "length"


async def test_a_raw_prompt_longer_than_context_is_refused_naming_the_prompt(
        engine: LlamaCppEngine) -> None:
    with pytest.raises(RawPromptTooLong, match="shorten the prompt") as raised:
        await collect(engine.generate(GenerationParams([], 8, prompt="word " * 2000)))
    assert raised.value.param == "prompt"


async def test_closing_the_stream_stops_generation_and_frees_the_engine(
        engine: LlamaCppEngine) -> None:
    stream = engine.generate(ask("Count from 1 to 500.", max_tokens=900))
    await anext(stream)
    await stream.aclose()  # what a cancelled request does
    # The engine is free at once: a short request does not wait for 900 tokens.
    completion = await asyncio.wait_for(collect(engine.generate(ask("Hi", max_tokens=3))), 20)
    assert completion.usage.completion_tokens == 3


async def test_concurrent_generations_are_serialized(engine: LlamaCppEngine) -> None:
    results = await asyncio.gather(*(collect(engine.generate(ask(f"Say {n}.", max_tokens=6)))
                                     for n in range(3)))
    # One llama.cpp context serves them one after the other; each gets its own complete answer.
    assert all(0 < r.usage.completion_tokens <= 6 and r.text for r in results)


def test_grammar_schema_is_what_llama_cpp_can_enforce() -> None:
    schema = {"type": "object", "properties": {
        "q": {"type": "string", "maxLength": 2000, "minLength": 1},
        "s": {"type": "string", "maxLength": 300},
        "o": {"type": "array", "maxItems": 4},
        "i": {"type": "integer", "minimum": 0, "maximum": 3},
        "n": {"type": "integer", "minimum": 0}}}
    assert grammar_schema(schema) == {"type": "object", "properties": {
        "q": {"type": "string", "minLength": 1}, "s": {"type": "string", "maxLength": 300},
        "o": {"type": "array", "maxItems": 4},
        "i": {"enum": [0, 1, 2, 3]}, "n": {"type": "integer", "minimum": 0}}}


async def test_a_real_content_schema_constrains_the_output(engine: LlamaCppEngine) -> None:
    from content.schemas import json_schema, validate

    completion = await collect(engine.generate(ask(
        "Write one flashcard about the sun as JSON.", max_tokens=120,
        json_schema=json_schema("flashcards"))))
    if completion.finish_reason == "stop":
        assert validate("flashcards", completion.text)[0] is not None


def test_grammar_schema_translates_subschemas_only() -> None:
    schema = {"type": "object", "properties": {
        "maxLength": {"type": "string", "maxLength": 5000},  # a property, not the keyword
        "ratio": {"type": "integer", "minimum": 0.5, "maximum": 3},  # not an integer range
        "empty": {"type": "integer", "minimum": 5, "maximum": 1}},  # an empty one
        "$defs": {"d": {"type": "integer", "minimum": -1, "maximum": 1}},
        "default": {"maxLength": 9999}}
    assert grammar_schema(schema) == {"type": "object", "properties": {
        "maxLength": {"type": "string"},
        "ratio": {"type": "integer", "minimum": 0.5, "maximum": 3},
        "empty": {"type": "integer", "minimum": 5, "maximum": 1}},
        "$defs": {"d": {"enum": [-1, 0, 1]}}, "default": {"maxLength": 9999}}


def test_strings_of_a_schema_exclude_raw_control_characters(engine: LlamaCppEngine) -> None:
    schema = {"type": "object", "properties": {"poem": {"type": "string"},
                                               "title": {"type": "string", "maxLength": 20}}}
    rules = (engine.grammar(ask("", json_schema=schema)) or "").splitlines()
    char = next(r for r in rules if r.startswith("char ::= "))
    assert char.startswith(r'char ::= [^"\\\x7F\x00-\x1F] ')  # JSON forbids a raw newline


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels - 1):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


# Each of these, before it was refused here, crashed the replica (llama.cpp refuses the grammar
# and then segfaults while sampling), hung it (the converter loops forever) or raised inside it.
HOSTILE = {
    "300-levels-deep": nested(300),
    "non-numeric-bound": {"type": "string", "maxLength": "many"},
    "huge-min-length": {"type": "string", "minLength": 100_000},
    "huge-max-items": {"type": "array", "items": {"type": "string"}, "maxItems": 5000},
    "ref-cycle": {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    "unknown-type": {"type": "strnig"},
    "pattern-the-converter-loops-on": {"type": "string", "pattern": "^a]$"},
    # Within core.schema's bounds, refused by llama.cpp or its converter:
    "escape-llama-cpp-refuses": {"type": "string", "pattern": "^\\d{3}$"},
    "unanchored-pattern": {"type": "string", "pattern": "[a-z]+"},
    "grammar-too-large": {"type": "object", "properties": {
        f"p{i}": {"type": "array", "maxItems": 256 - i, "items": {"type": "string"}}
        for i in range(64)}},
}


@pytest.mark.parametrize("schema", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_schema_the_engine_cannot_enforce_is_the_callers_error(
        engine: LlamaCppEngine, schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidSchema, match=r"^response_format\.json_schema: ") as caught:
        await collect(engine.generate(ask("Answer in JSON.", json_schema=schema)))
    assert caught.value.param == "response_format.json_schema"
    completion = await collect(engine.generate(ask("Say hi.", max_tokens=4)))
    assert completion.usage.completion_tokens == 4


def test_the_grammar_cap_is_below_what_the_bounds_allow(engine: LlamaCppEngine) -> None:
    schema = HOSTILE["grammar-too-large"]
    check_schema(schema)  # within the router's bounds ...
    with pytest.raises(InvalidSchema, match=f"at most {MAX_GRAMMAR_BYTES}"):
        engine.grammar(ask("", json_schema=schema))  # ... but not the engine's


async def test_text_that_is_not_unicode_is_the_callers_error(engine: LlamaCppEngine) -> None:
    with pytest.raises(InvalidMessages, match="not valid Unicode"):
        await collect(engine.generate(ask("half an emoji: \ud83d")))


def test_a_conversation_the_template_refuses_is_the_callers_error() -> None:
    from llama_cpp.llama_chat_format import MISTRAL_INSTRUCT_CHAT_TEMPLATE, Jinja2ChatFormatter

    alternating = Jinja2ChatFormatter(MISTRAL_INSTRUCT_CHAT_TEMPLATE, eos_token="</s>",
                                      bos_token="<s>")
    assert render_prompt(alternating, [{"role": "user", "content": "Hi"}])
    with pytest.raises(InvalidMessages, match="roles must alternate"):
        render_prompt(alternating, [{"role": "user", "content": "Hi"},
                                    {"role": "user", "content": "Again"}])


def test_caller_errors_are_one_type_that_crosses_processes() -> None:
    import pickle

    for error in (PromptTooLong("long"), InvalidMessages("bad"), InvalidSchema("bad")):
        copy = pickle.loads(pickle.dumps(error))
        assert isinstance(copy, RequestRejected) and str(copy) == str(error)
        assert copy.param == error.param


STORY = "Tell me a short story about a fox."


async def test_unseeded_requests_sample_independently_after_a_seeded_one(
        engine: LlamaCppEngine) -> None:
    seeded = ask(STORY, temperature=1.0, max_tokens=48, seed=1234)
    first = await collect(engine.generate(seeded))
    again = await collect(engine.generate(seeded))
    assert again.text == first.text  # a seed reproduces its sample ...
    unseeded = ask(STORY, temperature=1.0, max_tokens=48)
    one, two = [(await collect(engine.generate(unseeded))).text for _ in range(2)]
    assert one != two  # ... and does not stay: 48 tokens sampled alike twice by chance is negligible
    assert first.text not in (one, two)


def test_seeds_map_onto_llama_cpps_32_bits_without_its_random_marker() -> None:
    from llama_cpp.llama_cpp import LLAMA_DEFAULT_SEED

    from deployments.llm.llamacpp import _seed

    assert _seed(None) == LLAMA_DEFAULT_SEED  # a fresh random seed per sampler
    assert all(0 <= _seed(s) < LLAMA_DEFAULT_SEED for s in (0, 7, -1, 2**40, LLAMA_DEFAULT_SEED))
    assert _seed(7) == _seed(7)


# Schemas within core.schema's bounds, drawn from the keywords it admits.
NAMES = st.sampled_from(["a", "b", "name", "maxLength", "x y"])
PATTERNS = st.lists(st.sampled_from(["a", "[a-z]", "[^\\]]", ".", "(b|c)", "\\.", "x?", "y*", "z+",
                                     "{2}", "{1,3}", "{0,}", "\\d", "\\]", "\"", "é"]),
                    max_size=6).map(lambda parts: "^" + "".join(parts) + "$")
LEAVES = st.one_of(
    st.builds(dict, type=st.sampled_from(["string", "number", "integer", "boolean", "null"])),
    st.fixed_dictionaries({"type": st.just("string")}, optional={
        "minLength": st.integers(0, 5), "maxLength": st.integers(5, 400),
        "pattern": PATTERNS, "format": st.sampled_from(["date", "uuid", "email"])}),
    st.fixed_dictionaries({"type": st.just("integer")}, optional={
        "minimum": st.integers(-5, 5), "maximum": st.integers(5, 60)}),
    st.builds(dict, enum=st.lists(st.integers() | st.text(max_size=5) | st.none(), min_size=1,
                                  max_size=5)),
    st.builds(dict, const=st.text(max_size=5)))
SCHEMAS = st.recursive(LEAVES, lambda inner: st.one_of(
    st.fixed_dictionaries({"type": st.just("object"),
                           "properties": st.dictionaries(NAMES, inner, max_size=4)},
                          optional={"required": st.lists(NAMES, max_size=2, unique=True),
                                    "additionalProperties": st.booleans() | inner}),
    st.fixed_dictionaries({"type": st.just("array"), "items": inner},
                          optional={"minItems": st.integers(0, 3), "maxItems": st.integers(3, 30)}),
    st.builds(lambda options: {"anyOf": options}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda items: {"type": "array", "prefixItems": items},
              st.lists(inner, min_size=1, max_size=3))), max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCHEMAS)
def test_every_bounded_schema_compiles_or_is_refused_as_the_callers_error(
        engine: LlamaCppEngine, schema: dict[str, Any]) -> None:
    try:
        check_schema(schema)
    except SchemaError:
        return
    with contextlib.suppress(InvalidSchema):  # anything else (a crash, a hang) fails the test
        engine.grammar(ask("", json_schema=schema))


WEATHER = Tool("get_weather", "The weather now in a city.", {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                     "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city"], "additionalProperties": False})
COURSES = Tool("search_courses", "Search the course catalogue.", {
    "type": "object", "properties": {"topic": {"type": "string", "maxLength": 40},
                                     "level": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["topic"], "additionalProperties": False})


async def test_a_required_call_streams_as_calls_whose_arguments_fit_the_schema(
        engine: LlamaCppEngine) -> None:
    params = ask("What's the weather in Paris?", max_tokens=64, tools=(WEATHER, COURSES),
                 tool_choice="required")
    deltas = [d async for d in engine.generate(params)]
    assert all(not d.text for d in deltas)
    assert deltas[-1].finish_reason == "tool_calls"
    first = next(d.tool_calls[0] for d in deltas if d.tool_calls)
    assert first.index == 0 and first.id and first.name in ("get_weather", "search_courses")
    calls = ToolCallAssembler()
    for delta in deltas:
        calls.add(delta.tool_calls)
    (call,) = calls.calls()
    tool = {"get_weather": WEATHER, "search_courses": COURSES}[call.name]
    jsonschema.validate(json.loads(call.arguments), tool.parameters)
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.completion_tokens == sum(d.tokens or 0 for d in deltas)


async def test_a_named_call_is_that_function(engine: LlamaCppEngine) -> None:
    completion = await collect(engine.generate(ask(
        "Find me a course.", max_tokens=64, tools=(WEATHER, COURSES), tool_choice="search_courses")))
    (call,) = completion.tool_calls
    assert call.name == "search_courses"
    jsonschema.validate(json.loads(call.arguments), COURSES.parameters)


async def test_a_conversation_with_calls_and_results_is_answered_in_text(
        engine: LlamaCppEngine) -> None:
    messages = [{"role": "user", "content": "What's the weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}]
    completion = await collect(engine.generate(GenerationParams(
        messages, 24, temperature=0, tools=(WEATHER,), tool_choice="none")))
    assert completion.text and not completion.tool_calls
    assert completion.finish_reason in ("stop", "length")


async def test_tool_parameters_the_engine_cannot_enforce_are_the_callers_error(
        engine: LlamaCppEngine) -> None:
    digits = Tool("lookup", "", {"type": "object", "properties": {
        "code": {"type": "string", "pattern": "^\\d{3}$"}}})
    with pytest.raises(InvalidTools, match=r"^tools: llama\.cpp cannot build a grammar") as caught:
        await collect(engine.generate(ask("Look up 123.", tools=(digits,), tool_choice="lookup")))
    assert caught.value.param == "tools"
