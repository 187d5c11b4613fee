"""The llama.cpp engine on the packaged SmolLM2, in process."""

from __future__ import annotations

import asyncio
import json

import pytest

from core.config import LlamaCppSettings
from core.generation import GenerationParams, PromptTooLong, collect
from deployments.llm.llamacpp import LlamaCppEngine
from models import find_local_model, resolve_gguf


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
    from deployments.llm.llamacpp import grammar_schema

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
