"""vLLM on a real GPU: one streamed generation through the engine (skipped without CUDA)."""

from __future__ import annotations

import shutil

import pytest

from core.config import VLLMSettings
from core.generation import GenerationParams, collect
from models import find_local_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU"),
]


async def test_vllm_generates_with_usage() -> None:
    pytest.importorskip("vllm")
    from deployments.llm.vllm import VLLMEngine

    engine = VLLMEngine(find_local_model("smollm2-135m"),
                        VLLMSettings(max_model_len=2048, gpu_memory_utilization=0.3))
    completion = await collect(engine.generate(GenerationParams(
        messages=[{"role": "user", "content": "Say hi."}], max_tokens=16, temperature=0)))
    assert completion.text
    assert 0 < completion.usage.completion_tokens <= 16
    assert completion.usage.prompt_tokens > 0
