"""OpenAI (and OpenAI-compatible gateways) through the official SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import openai

from deployments.config import HostedProviderConfig
from deployments.llm.protocol import Delta, GenerationParams, Usage
from router.errors import ProviderError, ServiceError
from router.providers.base import translate_sdk_error


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


def openai_client(config: HostedProviderConfig, environ: Mapping[str, str],
                  max_retries: int) -> openai.AsyncOpenAI | None:
    """The SDK client, or None without OPENAI_API_KEY. base_url None lets the SDK apply
    OPENAI_BASE_URL itself."""
    key = environ.get("OPENAI_API_KEY")
    if not config.enabled or not key:
        return None
    return openai.AsyncOpenAI(api_key=key, base_url=config.base_url, max_retries=max_retries,
                              timeout=config.timeout_s)


class OpenAIProvider:
    name = "openai"

    def __init__(self, client: openai.AsyncOpenAI):
        self._client = client

    @classmethod
    def from_env(cls, config: HostedProviderConfig, environ: Mapping[str, str]) -> OpenAIProvider | None:
        client = openai_client(config, environ, max_retries=0)  # our retries, not the SDK's
        return cls(client) if client is not None else None

    async def stream(self, model: str, params: GenerationParams) -> AsyncIterator[Delta]:
        finish_reason, usage = None, Usage()
        try:
            stream = await self._client.chat.completions.create(
                **to_openai(model, params), stream=True, stream_options={"include_usage": True})
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
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


def translate_openai_error(model: str, error: Exception) -> ServiceError:
    return translate_sdk_error(openai, "openai", model, error)
