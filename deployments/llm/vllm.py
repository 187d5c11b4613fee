"""vLLM engine for GPU replicas (the [gpu] extra). vLLM is imported lazily; the request/response
transforms are plain functions so they are tested on machines without a GPU."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from core.config import VLLMSettings
from core.generation import (
    Delta,
    EngineLoad,
    GenerationParams,
    PromptTooLong,
    RawPromptTooLong,
    TokenUsage,
    ToolCallDelta,
)
from core.schema import grammar_safe
from deployments.llm.toolcalls import ToolCallStream, call_schema, text_messages, to_calls
from deployments.llm.vllm_load import VLLMLoad
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
        # A class's shared prefix (lesson, template) is computed once and its KV blocks reused.
        "enable_prefix_caching": settings.enable_prefix_caching,
        # Requests queue by GenerationParams.priority (vLLM serves lower values first).
        "scheduling_policy": "priority",
        "max_num_seqs": settings.max_num_seqs,  # the slots the replica's load counts
    }
    if settings.max_model_len:
        args["max_model_len"] = settings.max_model_len
    if settings.quantization:
        args["quantization"] = settings.quantization
    return args


# The longest `maxLength` guided decoding enforces (as llama.cpp's grammar); longer ones, and
# patterns, are left out of the grammar (core/schema.py grammar_safe).
MAX_GRAMMAR_LENGTH = 300


def sampling_kwargs(params: GenerationParams, settings: VLLMSettings) -> dict[str, Any]:
    return {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop),
        "seed": params.seed,
        "repetition_penalty": settings.repetition_penalty,
    }


def chat_template_kwargs(params: GenerationParams, settings: VLLMSettings) -> dict[str, Any]:
    """What the tokenizer's chat template renders: with a tool call parser configured (a model
    trained for tool calls), the conversation and tools as OpenAI sends them, which such templates
    render natively; otherwise text turns (deployments/llm/toolcalls.py)."""
    if settings.tool_call_parser and params.tools and params.tool_choice != "none":
        return {"conversation": params.messages, "tools": [
            {"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}} for t in params.tools]}
    return {"conversation": text_messages(params)}


def output_schema(params: GenerationParams) -> dict[str, Any] | None:
    """What guided decoding constrains the output to: a required tool call, or the JSON asked for,
    within what a grammar enforces at a bounded cost."""
    schema = call_schema(params) if params.required_tools() else params.json_schema
    return None if schema is None else grammar_safe(schema, MAX_GRAMMAR_LENGTH)


def parsed_delta(message: Any, tokens: int) -> Delta:
    """A vLLM tool parser's DeltaMessage (content and/or tool call pieces) as a Delta."""
    calls = tuple(ToolCallDelta(c.index, c.id, c.function.name if c.function else None,
                                (c.function.arguments if c.function else None) or "")
                  for c in (message.tool_calls if message is not None else None) or ())
    return Delta((message.content if message is not None else None) or "", tokens=tokens,
                 tool_calls=calls)


class ParsedCalls:
    """vLLM's own tool call parser (tool_call_parser) over a generation the model may answer with
    calls (tool_choice "auto"): each step's text, or the calls it found, as deltas."""

    def __init__(self, parser: Any, request: Any):
        self._parser = parser
        self._request = request
        self._text = ""
        self._ids: list[int] = []
        self._called = False

    def step(self, delta: Delta, token_ids: list[int]) -> Delta:
        text, ids = self._text + delta.text, list(token_ids)
        message = self._parser.extract_tool_calls_streaming(
            self._text, text, delta.text, self._ids, ids, ids[len(self._ids):], self._request)
        self._text, self._ids = text, ids
        parsed = parsed_delta(message, delta.tokens or 0)
        self._called = self._called or bool(parsed.tool_calls)
        finish = "tool_calls" if delta.finish_reason == "stop" and self._called \
            else delta.finish_reason
        return Delta(parsed.text, finish, delta.usage, parsed.tokens, parsed.tool_calls)


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
    """One model on vLLM. `engine` (an AsyncLLM) and `sampling` (what makes vLLM's SamplingParams
    of sampling_kwargs and a schema) are vLLM's own unless a test passes stand-ins."""

    def __init__(self, spec: LocalModelSpec, settings: VLLMSettings, engine: Any = None,
                 sampling: Callable[[dict[str, Any], dict[str, Any] | None], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if engine is None:
            from vllm import AsyncEngineArgs, AsyncLLMEngine

            engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**engine_args(spec, settings)))
        self._engine = engine
        self._sampling = sampling or _sampling_params
        self._settings = settings
        self._max_len = settings.max_model_len or spec.context_window
        self._load = VLLMLoad(settings.max_num_seqs, settings.max_queued, clock)

    def load(self) -> EngineLoad:
        return self._load.load()

    def check_health(self) -> None:
        if getattr(self._engine, "errored", False):
            raise RuntimeError("vLLM engine has errored")

    async def _prompt(self, params: GenerationParams) -> str:
        """The chat as the model's template renders it, or a raw prompt as it is."""
        tokenizer = await self._engine.get_tokenizer()
        prompt: str = params.prompt if params.prompt is not None else tokenizer.apply_chat_template(
            **chat_template_kwargs(params, self._settings), tokenize=False,
            add_generation_prompt=True)
        if len(tokenizer.encode(prompt)) >= self._max_len:
            raise (PromptTooLong if params.prompt is None else RawPromptTooLong)(
                f"the prompt does not fit the {self._max_len}-token context")
        return prompt

    async def generate(self, params: GenerationParams) -> AsyncIterator[Delta]:
        flight = self._load.admit(params)  # EngineBusy at once when it would wait too long
        required = ToolCallStream() if params.required_tools() else None
        request_id = uuid.uuid4().hex
        tracker = OutputTracker()
        try:
            parsed = await self._parsed_calls(params)
            async for output in self._engine.generate(
                    await self._prompt(params),
                    self._sampling(sampling_kwargs(params, self._settings), output_schema(params)),
                    request_id, priority=-params.priority):
                choice = output.outputs[0]
                self._load.produced(flight, len(choice.token_ids))
                delta = tracker.delta(choice.text, len(output.prompt_token_ids or []),
                                      len(choice.token_ids), choice.finish_reason)
                if required is not None:
                    delta = to_calls(delta, required)
                elif parsed is not None:
                    delta = parsed.step(delta, list(choice.token_ids))
                yield delta
        finally:
            self._load.done(flight)
            await self._engine.abort(request_id)  # no-op when finished; frees the GPU when cancelled

    async def _parsed_calls(self, params: GenerationParams) -> ParsedCalls | None:
        """vLLM's tool parser, where the model decides whether to call (tool_choice "auto")."""
        if not (self._settings.enable_auto_tool_choice and params.tools
                and params.tool_choice == "auto"):
            return None
        # Where vLLM's OpenAI server keeps them (0.10-0.11): its parsers read its request type.
        from vllm.entrypoints.openai.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.tool_parsers import ToolParserManager

        parser = ToolParserManager.get_tool_parser(self._settings.tool_call_parser)
        request = ChatCompletionRequest(
            model="local", messages=params.messages, tool_choice="auto",
            tools=chat_template_kwargs(params, self._settings)["tools"])
        return ParsedCalls(parser(await self._engine.get_tokenizer()), request)


def _sampling_params(kwargs: dict[str, Any], schema: dict[str, Any] | None) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    if schema is not None:
        kwargs = {**kwargs, "structured_outputs": StructuredOutputsParams(
            json=schema or {"type": "object"})}
    return SamplingParams(**kwargs)
