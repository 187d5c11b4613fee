"""OpenAI (and OpenAI-compatible gateways) through the official SDK."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import openai
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

from core.config import HostedProviderConfig
from core.errors import ProviderError
from core.generation import Delta, GenerationParams, TokenUsage, Tool, ToolCallDelta
from core.sdk import openai_client, translate_openai_error


def to_openai(model: str, params: GenerationParams) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": model, "messages": [_message(m) for m in params.messages],
        "max_completion_tokens": params.max_tokens, "temperature": params.temperature,
        "top_p": params.top_p,
    }
    if params.stop:
        request["stop"] = params.stop
    if params.seed is not None:
        request["seed"] = params.seed
    if params.json_schema:
        request["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "output", "schema": params.json_schema}}
    elif params.json_schema is not None:
        request["response_format"] = {"type": "json_object"}
    if params.tools:
        request["tools"] = [_tool(t) for t in params.tools]
        request["tool_choice"] = params.tool_choice if params.tool_choice in MODES else {
            "type": "function", "function": {"name": params.tool_choice}}
        request["parallel_tool_calls"] = params.parallel_tool_calls
    return request


def to_openai_completion(model: str, params: GenerationParams) -> dict[str, Any]:
    """A raw prompt for OpenAI's legacy completions API (its completion models)."""
    request: dict[str, Any] = {"model": model, "prompt": params.prompt,
                               "max_tokens": params.max_tokens,
                               "temperature": params.temperature, "top_p": params.top_p}
    if params.stop:
        request["stop"] = params.stop
    if params.seed is not None:
        request["seed"] = params.seed
    return request


MODES = ("auto", "none", "required")


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant turn that only called tools has null content, as OpenAI sends it."""
    if message.get("tool_calls") and not message["content"]:
        return {**message, "content": None}
    return message


def _call(chunk: ChoiceDeltaToolCall) -> ToolCallDelta:
    function = chunk.function
    return ToolCallDelta(chunk.index, chunk.id, function.name if function else None,
                         (function.arguments if function else None) or "")


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


class OpenAIProvider:
    name = "openai"

    def __init__(self, client: openai.AsyncOpenAI):
        self._client = client

    @classmethod
    def from_env(cls, config: HostedProviderConfig, environ: Mapping[str, str]) -> OpenAIProvider | None:
        client = openai_client(config, environ, max_retries=0)  # our retries, not the SDK's
        return cls(client) if client is not None else None

    async def aclose(self) -> None:
        await self._client.close()

    async def stream(self, model: str, params: GenerationParams) -> AsyncGenerator[Delta, None]:
        if params.prompt is not None:
            async for delta in self._complete(model, params):
                yield delta
            return
        finish_reason, usage = None, TokenUsage()
        try:
            stream = await self._client.chat.completions.create(
                **to_openai(model, params), stream=True, stream_options={"include_usage": True})
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = TokenUsage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                    for choice in chunk.choices:
                        calls = tuple(_call(c) for c in choice.delta.tool_calls or ())
                        if choice.delta.content or calls:  # a token per chunk
                            yield Delta(choice.delta.content or "", tokens=1, tool_calls=calls)
                        finish_reason = choice.finish_reason or finish_reason
        except (openai.APIError, ValueError) as error:  # ValueError: JSON that does not parse
            raise translate_openai_error(model, error) from None
        if finish_reason is None:
            raise ProviderError("the stream ended without a finish_reason", provider="openai",
                                model=model)
        yield Delta("", finish_reason=finish_reason, usage=usage)

    async def _complete(self, model: str, params: GenerationParams) -> AsyncGenerator[Delta, None]:
        """A raw prompt through the completions API, streamed as chat is."""
        finish_reason, usage = None, TokenUsage()
        try:
            stream = await self._client.completions.create(
                **to_openai_completion(model, params), stream=True,
                stream_options={"include_usage": True})
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = TokenUsage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                    for choice in chunk.choices:
                        if choice.text:
                            yield Delta(choice.text, tokens=1)  # a token per chunk
                        finish_reason = choice.finish_reason or finish_reason
        except (openai.APIError, ValueError) as error:  # ValueError: JSON that does not parse
            raise translate_openai_error(model, error) from None
        if finish_reason is None:
            raise ProviderError("the stream ended without a finish_reason", provider="openai",
                                model=model)
        yield Delta("", finish_reason=finish_reason, usage=usage)
