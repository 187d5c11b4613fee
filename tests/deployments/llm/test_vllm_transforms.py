"""The vLLM engine's CPU-side logic (the engine itself needs a GPU: tests/gpu)."""

from __future__ import annotations

import pytest

from core.config import VLLMSettings
from core.generation import GenerationParams, TokenUsage
from deployments.llm.vllm import OutputTracker, engine_args, sampling_kwargs
from models import LocalModelSpec, find_local_model


def test_engine_args_come_from_the_registry_and_settings() -> None:
    args = engine_args(find_local_model("llama-3-8b"),
                       VLLMSettings(max_model_len=4096, gpu_memory_utilization=0.8))
    assert args["model"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert args["max_model_len"] == 4096
    assert args["gpu_memory_utilization"] == 0.8
    assert "quantization" not in args


def test_model_without_hf_id_cannot_be_served_by_vllm() -> None:
    spec = LocalModelSpec(name="x", gguf_file="x.gguf", context_window=10, tier="small")
    with pytest.raises(ValueError, match="no hf_id"):
        engine_args(spec, VLLMSettings())


def test_sampling_kwargs_carry_the_request() -> None:
    params = GenerationParams(messages=[], max_tokens=7, temperature=0, stop=["\n"], seed=3)
    kwargs = sampling_kwargs(params)
    assert (kwargs["max_tokens"], kwargs["temperature"], kwargs["stop"], kwargs["seed"]) == \
        (7, 0, ["\n"], 3)


def test_cumulative_outputs_become_deltas_with_final_usage() -> None:
    tracker = OutputTracker()
    assert tracker.delta("Hel", 5, 1, None).text == "Hel"
    assert tracker.delta("Hello", 5, 2, None).text == "lo"
    last = tracker.delta("Hello!", 5, 3, "stop")
    assert (last.text, last.finish_reason, last.usage) == ("!", "stop", TokenUsage(5, 3))
