"""vLLM on a real GPU: one streamed generation through the engine, a required tool call under
guided decoding, and the load its wrapper counts (skipped without CUDA)."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from core.config import VLLMSettings
from core.generation import GenerationParams, Tool
from models import find_local_model
from tests.deltas import collect

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU"),
]


@pytest.fixture(scope="module")
def engine() -> Any:
    pytest.importorskip("vllm")
    from deployments.llm.vllm import VLLMEngine

    return VLLMEngine(find_local_model("smollm2-135m"),
                      VLLMSettings(max_model_len=2048, gpu_memory_utilization=0.3))


async def test_vllm_generates_with_usage(engine: Any) -> None:
    completion = await collect(engine.generate(GenerationParams(
        messages=[{"role": "user", "content": "Say hi."}], max_tokens=16, temperature=0)))
    assert completion.text
    assert 0 < completion.usage.completion_tokens <= 16
    assert completion.usage.prompt_tokens > 0


async def test_vllm_makes_a_required_tool_call_that_fits_the_schema(engine: Any) -> None:
    import jsonschema

    weather = Tool("get_weather", "The weather now in a city.", {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"], "additionalProperties": False})
    completion = await collect(engine.generate(GenerationParams(
        messages=[{"role": "user", "content": "Weather in Paris?"}], max_tokens=64,
        temperature=0, tools=(weather,), tool_choice="required")))
    assert completion.finish_reason == "tool_calls"
    (call,) = completion.tool_calls
    assert call.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), weather.parameters)


async def test_vllm_counts_what_it_runs_and_the_wait_it_measures(engine: Any) -> None:
    deltas = engine.generate(GenerationParams(
        messages=[{"role": "user", "content": "Count to ten."}], max_tokens=32, temperature=0))
    await anext(deltas)
    load = engine.load()
    assert (load.queued, load.busy, load.slots) == (0, 1, 64)  # vllm.max_num_seqs
    await collect(deltas)
    load = engine.load()
    assert load.busy == 0 and 0 < load.estimated_wait_s < 5
