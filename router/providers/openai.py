"""OpenAI (and OpenAI-compatible gateways) through the official SDK."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import openai

from core.config import HostedProviderConfig
from core.errors import ProviderError
from core.generation import Delta, GenerationParams, TokenUsage
from core.sdk import openai_client, translate_openai_error


def to_openai(model: str, params: GenerationParams) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": model, "messages": params.messages, "max_completion_tokens": params.max_tokens,
        "temperature": params.temperature, "top_p": params.top_p,
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
                        if choice.delta.content:
                            yield Delta(choice.delta.content, tokens=1)  # a token per chunk
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
