"""The vLLM engine's CPU-side logic (the engine itself needs a GPU: tests/gpu)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from core.config import AppConfig, VLLMSettings
from core.generation import Delta, GenerationParams, TokenUsage, Tool, ToolCallDelta
from deployments.llm.toolcalls import call_schema, text_messages
from deployments.llm.vllm import (
    OutputTracker,
    ParsedCalls,
    chat_template_kwargs,
    engine_args,
    output_schema,
    sampling_kwargs,
)
from models import LocalModelSpec, find_local_model
from router.services.chat import build_catalog


def test_engine_args_come_from_the_registry_and_settings() -> None:
    args = engine_args(find_local_model("llama-3-8b"),
                       VLLMSettings(max_model_len=4096, gpu_memory_utilization=0.8))
    assert args["model"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert args["max_model_len"] == 4096
    assert args["gpu_memory_utilization"] == 0.8
    assert "quantization" not in args


def test_engine_args_cache_shared_prefixes_and_queue_by_priority() -> None:
    args = engine_args(find_local_model("llama-3-8b"), VLLMSettings())
    assert args["enable_prefix_caching"] is True
    assert args["scheduling_policy"] == "priority"
    assert engine_args(find_local_model("llama-3-8b"), VLLMSettings(
        enable_prefix_caching=False))["enable_prefix_caching"] is False


def test_model_without_hf_id_cannot_be_served_by_vllm() -> None:
    spec = LocalModelSpec(name="x", gguf_file="x.gguf", context_window=10, tier="small")
    with pytest.raises(ValueError, match="no hf_id"):
        engine_args(spec, VLLMSettings())


def test_sampling_kwargs_carry_the_request() -> None:
    params = GenerationParams(messages=[], max_tokens=7, temperature=0, stop=["\n"], seed=3)
    kwargs = sampling_kwargs(params, VLLMSettings())
    assert (kwargs["max_tokens"], kwargs["temperature"], kwargs["stop"], kwargs["seed"]) == \
        (7, 0, ["\n"], 3)


def test_cumulative_outputs_become_deltas_with_final_usage() -> None:
    tracker = OutputTracker()
    assert tracker.delta("Hel", 5, 1, None).text == "Hel"
    assert tracker.delta("Hello", 5, 2, None).text == "lo"
    last = tracker.delta("Hello!", 5, 3, "stop")
    assert (last.text, last.finish_reason, last.usage) == ("!", "stop", TokenUsage(5, 3))


WEATHER = Tool("get_weather", "The weather now.", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
CALLED = [{"role": "user", "content": "Weather in Oslo?"},
          {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
           "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
          {"role": "tool", "tool_call_id": "call_1", "content": "4 C"}]


def test_auto_tool_choice_needs_the_models_tool_call_parser() -> None:
    with pytest.raises(ValidationError, match="enable_auto_tool_choice needs tool_call_parser"):
        VLLMSettings(enable_auto_tool_choice=True)
    assert VLLMSettings(enable_auto_tool_choice=True, tool_call_parser="hermes")


def test_only_a_vllm_model_with_auto_tool_choice_decides_when_to_call() -> None:
    config = AppConfig.model_validate({"auth": {"enabled": False}, "local_models": [
        {"name": "llama-3-8b", "engine": "vllm",
         "vllm": {"tool_call_parser": "llama3_json", "enable_auto_tool_choice": True}},
        {"name": "mistral-7b", "engine": "vllm", "vllm": {"tool_call_parser": "mistral"}},
        {"name": "smollm2-135m"}]})
    calling = {c.name: c.tool_calling for c in build_catalog(config) if c.provider == "local"}
    assert calling == {"llama-3-8b": "auto", "mistral-7b": "required", "smollm2-135m": "required"}


def test_a_parser_model_gets_the_conversation_and_tools_as_openai_sends_them() -> None:
    params = GenerationParams(CALLED, 16, tools=(WEATHER,))
    native = chat_template_kwargs(params, VLLMSettings(tool_call_parser="hermes"))
    assert native["conversation"] == CALLED
    assert native["tools"][0]["function"]["parameters"] == WEATHER.parameters
    plain = chat_template_kwargs(params, VLLMSettings())
    assert plain == {"conversation": text_messages(params)}


def test_guided_decoding_follows_a_required_call_or_the_json_asked_for() -> None:
    required = GenerationParams(CALLED[:1], 16, tools=(WEATHER,), tool_choice="required")
    assert output_schema(required) == call_schema(required)
    assert output_schema(GenerationParams([], 16, json_schema={"type": "object"})) == \
        {"type": "object"}
    assert output_schema(GenerationParams([], 16, tools=(WEATHER,))) is None  # auto


class FakeParser:
    """vLLM's ToolParser contract: per step, the new text as content or tool call pieces."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, list[int]]] = []

    def extract_tool_calls_streaming(self, previous_text: str, current_text: str, delta_text: str,
                                     previous_ids: list[int], current_ids: list[int],
                                     delta_ids: list[int], request: object) -> Any:
        self.seen.append((previous_text, delta_text, delta_ids))
        if "<call>" not in current_text:
            return SimpleNamespace(content=delta_text, tool_calls=None)
        if delta_text == "<call>":
            return None  # the parser holds the marker back
        function = SimpleNamespace(name="get_weather" if "{" in delta_text else None,
                                   arguments=delta_text)
        return SimpleNamespace(content=None, tool_calls=[
            SimpleNamespace(index=0, id="call_v" if function.name else None, function=function)])


def test_vllms_parser_turns_steps_into_text_or_call_deltas() -> None:
    parser = FakeParser()
    calls = ParsedCalls(parser, request=None)
    steps = [calls.step(Delta("Sure. ", tokens=2), [1, 2]),
             calls.step(Delta("<call>", tokens=1), [1, 2, 3]),
             calls.step(Delta('{"city": "Oslo"}', tokens=4), [1, 2, 3, 4, 5, 6, 7]),
             calls.step(Delta("", finish_reason="stop", usage=TokenUsage(9, 7), tokens=0),
                        [1, 2, 3, 4, 5, 6, 7])]
    assert [s.text for s in steps] == ["Sure. ", "", "", ""]
    assert steps[2].tool_calls == (ToolCallDelta(0, "call_v", "get_weather", '{"city": "Oslo"}'),)
    assert (steps[3].finish_reason, steps[3].usage) == ("tool_calls", TokenUsage(9, 7))
    assert [s.tokens for s in steps] == [2, 1, 4, 0]
    assert parser.seen[2] == ("Sure. <call>", '{"city": "Oslo"}', [4, 5, 6, 7])


def test_the_repetition_penalty_comes_from_the_settings() -> None:
    params = GenerationParams(messages=[], max_tokens=7)
    assert sampling_kwargs(params, VLLMSettings())["repetition_penalty"] == 1.1
    assert sampling_kwargs(params, VLLMSettings(repetition_penalty=1.0))["repetition_penalty"] == 1.0


def test_guided_decoding_gets_no_patterns_and_no_unbounded_lengths() -> None:
    schema = {"type": "object", "properties": {
        "s": {"type": "string", "pattern": "^(a?){200}a{200}$", "maxLength": 10**12}}}
    params = GenerationParams(messages=[], max_tokens=7, json_schema=schema)
    assert output_schema(params) == {"type": "object", "properties": {"s": {"type": "string"}}}
    assert output_schema(GenerationParams(messages=[], max_tokens=7, json_schema={})) == {}
