"""vLLM engine for GPU replicas (the [gpu] extra). vLLM is imported lazily; the request/response
transforms are plain functions so they are tested on machines without a GPU."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from core.config import VLLMSettings
from core.generation import Delta, GenerationParams, PromptTooLong, RawPromptTooLong, TokenUsage
from models import LocalModelSpec


def engine_args(spec: LocalModelSpec, settings: VLLMSettings) -> dict[str, Any]:
    if not spec.hf_id:
        raise ValueError(f"model {spec.name!r} has no hf_id: vLLM cannot load it")
    args: dict[str, Any] = {
        "model": spec.hf_id,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "dtype": settings.dtype,
        "enforce_eager": settings.enforce_eager,
    }
    if settings.max_model_len:
        args["max_model_len"] = settings.max_model_len
    if settings.quantization:
        args["quantization"] = settings.quantization
    return args


def sampling_kwargs(params: GenerationParams) -> dict[str, Any]:
    return {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop),
        "seed": params.seed,
        "repetition_penalty": 1.1,
    }


class OutputTracker:
    """vLLM reports cumulative text and token ids; turn them into deltas with usage at the end."""

    def __init__(self) -> None:
        self._sent = 0
        self._tokens = 0

    def delta(self, text: str, prompt_tokens: int, completion_tokens: int,
              finish_reason: str | None) -> Delta:
        piece, self._sent = text[self._sent:], len(text)
        tokens, self._tokens = completion_tokens - self._tokens, completion_tokens
        if finish_reason is None:
            return Delta(piece, tokens=tokens)
        return Delta(piece, finish_reason=finish_reason,
                     usage=TokenUsage(prompt_tokens, completion_tokens), tokens=tokens)


class VLLMEngine:
    def __init__(self, spec: LocalModelSpec, settings: VLLMSettings):
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self._engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**engine_args(spec, settings)))
        self._max_len = settings.max_model_len or spec.context_window

    def check_health(self) -> None:
        if getattr(self._engine, "errored", False):
            raise RuntimeError("vLLM engine has errored")

    async def _prompt(self, params: GenerationParams) -> str:
        """The chat as the model's template renders it, or a raw prompt as it is."""
        tokenizer = await self._engine.get_tokenizer()
        prompt: str = params.prompt if params.prompt is not None else tokenizer.apply_chat_template(
            params.messages, tokenize=False, add_generation_prompt=True)
        if len(tokenizer.encode(prompt)) >= self._max_len:
            raise (PromptTooLong if params.prompt is None else RawPromptTooLong)(
                f"the prompt does not fit the {self._max_len}-token context")
        return prompt

    async def generate(self, params: GenerationParams) -> AsyncIterator[Delta]:
        from vllm import SamplingParams

        kwargs = sampling_kwargs(params)
        if params.json_schema is not None:
            kwargs["structured_outputs"] = _structured(params.json_schema)
        request_id = uuid.uuid4().hex
        tracker = OutputTracker()
        try:
            async for output in self._engine.generate(
                    await self._prompt(params), SamplingParams(**kwargs), request_id):
                choice = output.outputs[0]
                yield tracker.delta(choice.text, len(output.prompt_token_ids or []),
                                    len(choice.token_ids), choice.finish_reason)
        finally:
            await self._engine.abort(request_id)  # no-op when finished; frees the GPU when cancelled


def _structured(schema: dict[str, Any]) -> Any:
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(json=schema or {"type": "object"})
