"""OpenAI (and OpenAI-compatible gateways). Chat completions, the hot path, are sent with the SDK's
own base URL and headers (key, organization, project) over aiohttp and read as SSE bytes, decoding
only the fields the router needs: measured, the SDK's pydantic object per chunk and its HTTP stack
cost more CPU than the rest of the router's work per request (docs/benchmarks.md). Legacy
completions go through the SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import httpx2
import openai

from core.config import HostedProviderConfig
from core.errors import ProviderError
from core.generation import (
    TOOL_CHOICE_MODES,
    Delta,
    GenerationParams,
    TokenUsage,
    Tool,
    ToolCallDelta,
)
from core.sdk import (
    broken_transfer,
    openai_client,
    retry_after_seconds,
    translate_openai_error,
    upstream_error,
)
from router.run.providers.caching import prompt_cache_key
from router.wire.sse import decode_json


def to_openai(model: str, params: GenerationParams,
              cache_min_tokens: int | None = None) -> dict[str, Any]:
    """With `cache_min_tokens`, a prompt_cache_key derived from a shared prefix that long (or the
    caller's own key) routes a class's requests to the same prompt cache."""
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
        request["tool_choice"] = params.tool_choice if params.tool_choice in TOOL_CHOICE_MODES else {
            "type": "function", "function": {"name": params.tool_choice}}
        request["parallel_tool_calls"] = params.parallel_tool_calls
    key = params.prompt_cache_key if cache_min_tokens is None \
        else prompt_cache_key(params, cache_min_tokens)
    if key is not None:
        request["prompt_cache_key"] = key
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


def openai_usage(usage: dict[str, Any]) -> TokenUsage:
    """OpenAI's usage object (Chat Completions and legacy completions, streamed or not): its
    prompt_tokens include the cached ones, its completion_tokens the reasoning ones."""
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return TokenUsage(usage["prompt_tokens"], usage["completion_tokens"],
                      cached_tokens=prompt.get("cached_tokens") or 0,
                      reasoning_tokens=completion.get("reasoning_tokens") or 0)


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant turn that only called tools has null content, as OpenAI sends it."""
    if message.get("tool_calls") and not message["content"]:
        return {**message, "content": None}
    return message


def _call(chunk: dict[str, Any]) -> ToolCallDelta:
    function = chunk.get("function") or {}
    return ToolCallDelta(chunk["index"], chunk.get("id"), function.get("name"),
                         function.get("arguments") or "")


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


class OpenAIProvider:
    name = "openai"

    def __init__(self, client: openai.AsyncOpenAI, timeout_s: float = 60.0,
                 cache_min_tokens: int | None = None):
        self._client = client
        self._cache_min_tokens = cache_min_tokens
        self._chat_url = f"{str(client.base_url).rstrip('/')}/chat/completions"
        self._headers = {**client.auth_headers, **{k: v for k, v in client.default_headers.items()
                                                    if isinstance(v, str)}}
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s,
                                              sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None  # made on the event loop, at first use

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers=self._headers,
                connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0))
        return self._session

    @classmethod
    def from_env(cls, config: HostedProviderConfig, environ: Mapping[str, str]) -> OpenAIProvider | None:
        client = openai_client(config, environ, max_retries=0)  # our retries, not the SDK's
        return cls(client, config.timeout_s, config.prompt_cache_min_tokens) \
            if client is not None else None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._client.close()

    async def stream(self, model: str, params: GenerationParams) -> AsyncGenerator[Delta, None]:
        deltas = self._complete(model, params) if params.prompt is not None \
            else self._chat(model, params)
        async for delta in deltas:
            yield delta

    async def _chat(self, model: str, params: GenerationParams) -> AsyncGenerator[Delta, None]:
        """Chat completions, read as SSE bytes: only the fields the router needs are decoded (the
        SDK would build a pydantic object per chunk, a third of the router's CPU)."""
        body = json.dumps({**to_openai(model, params, self._cache_min_tokens), "stream": True,
                           "stream_options": {"include_usage": True}}).encode()
        finish_reason: str | None = None
        usage: TokenUsage | None = None  # None: no usage chunk came (the router estimates it)
        try:
            async with self._http().post(self._chat_url, data=body, headers=params.trace) as response:
                if response.status >= 400:
                    raise upstream_error(self.name, model, status=response.status,
                                         retry_after=retry_after_seconds(response.headers))
                async for chunk in decode_json(response.content.iter_any()):
                    if chunk.get("usage"):
                        usage = openai_usage(chunk["usage"])
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        calls = tuple(_call(c) for c in delta.get("tool_calls") or ())
                        if delta.get("content") or calls:  # a token per chunk
                            yield Delta(delta.get("content") or "", tokens=1, tool_calls=calls)
                        finish_reason = choice.get("finish_reason") or finish_reason
        except (TimeoutError, aiohttp.ClientError) as error:  # timed out, or the connection broke
            if finish_reason is None:  # after it, only the usage report and [DONE] are lost
                raise upstream_error(self.name, model,
                                     timeout=isinstance(error, TimeoutError)) from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:  # not OpenAI's shape
            raise ProviderError(f"malformed response ({type(error).__name__})",
                                provider=self.name, model=model) from None
        if finish_reason is None:
            raise ProviderError("the stream ended without a finish_reason", provider=self.name,
                                model=model)
        yield Delta("", finish_reason=finish_reason, usage=usage)

    async def _complete(self, model: str, params: GenerationParams) -> AsyncGenerator[Delta, None]:
        """A raw prompt through the completions API, streamed as chat is."""
        finish_reason: str | None = None
        usage: TokenUsage | None = None
        try:
            stream = await self._client.completions.create(
                **to_openai_completion(model, params), stream=True,
                stream_options={"include_usage": True}, extra_headers=params.trace)
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = openai_usage(chunk.usage.model_dump())
                    for choice in chunk.choices:
                        if choice.text:
                            yield Delta(choice.text, tokens=1)  # a token per chunk
                        finish_reason = choice.finish_reason or finish_reason
        except (openai.APIError, ValueError, httpx2.TransportError) as error:  # ValueError: bad JSON
            if finish_reason is None or not broken_transfer(openai, error):
                raise translate_openai_error(model, error) from None
        if finish_reason is None:
            raise ProviderError("the stream ended without a finish_reason", provider="openai",
                                model=model)
        yield Delta("", finish_reason=finish_reason, usage=usage)
