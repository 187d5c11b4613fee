"""Chat completions: from an OpenAI request to a provider call and back to OpenAI's wire format."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from deployments.config import AppConfig, RouterConfig
from deployments.llm.protocol import Delta, GenerationParams
from deployments.llm.protocol import Usage as TokenUsage
from models import find_local_model
from router.errors import InvalidRequest, ModelNotFound, ProviderError
from router.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    DeltaMessage,
    Usage,
    _chat_id,
)
from router.providers import Provider


@dataclass(frozen=True)
class Route:
    provider: Provider
    model: str
    reason: str

    def describe(self) -> dict[str, str]:
        return {"provider": self.provider.name, "model": self.model, "reason": self.reason}

    def header(self) -> str:
        return f"{self.provider.name}/{self.model}"


class ChatService:
    def __init__(self, config: RouterConfig, models: dict[str, tuple[Provider, str]]):
        """`models` maps every accepted name (model or alias) to its provider and concrete model."""
        self._config = config
        self._models = models

    def model_names(self) -> list[str]:
        return sorted({model for _, model in self._models.values()})

    def route(self, request: ChatCompletionRequest) -> Route:
        if request.model not in self._models:
            raise ModelNotFound(request.model, self.model_names())
        provider, model = self._models[request.model]
        reason = "requested" if request.model == model else f"alias of {request.model!r}"
        return Route(provider, model, reason)

    def params(self, request: ChatCompletionRequest) -> GenerationParams:
        max_tokens = request.requested_max_tokens() or self._config.default_max_tokens
        if max_tokens > self._config.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens is {max_tokens}; it must be between 1 and "
                f"{self._config.max_tokens_limit}", param="max_tokens")
        json_schema = None
        if request.response_format and request.response_format.type != "text":
            json_schema = (request.response_format.json_schema or {}).get("schema", {})
        return GenerationParams(
            messages=[{"role": _role(m.role), "content": m.text()} for m in request.messages],
            max_tokens=max_tokens, temperature=request.temperature, top_p=request.top_p,
            stop=request.stop_list(), seed=request.seed, json_schema=json_schema)

    async def complete(self, request: ChatCompletionRequest, route: Route) -> ChatCompletion:
        completion = await route.provider.complete(route.model, self.params(request))
        return ChatCompletion(
            model=route.model,
            choices=[Choice(message=AssistantMessage(content=completion.text),
                            finish_reason=completion.finish_reason)],
            usage=_wire_usage(completion.usage),
            route=route.describe())

    async def stream(self, request: ChatCompletionRequest,
                     route: Route) -> AsyncIterator[ChatCompletionChunk]:
        """Start the stream and wait for its first delta, so that anything failing before the first
        token (bad input, a provider down) is an HTTP error rather than an event in a 200 stream."""
        deltas = route.provider.stream(route.model, self.params(request))
        try:
            first = await anext(deltas)
        except StopAsyncIteration:
            first = None
        return self._chunks(request, route, first, deltas)

    async def _chunks(self, request: ChatCompletionRequest, route: Route, first: Delta | None,
                      rest: AsyncIterator[Delta]) -> AsyncIterator[ChatCompletionChunk]:
        base = {"id": _chat_id(), "created": int(time.time()), "model": route.model}
        yield ChatCompletionChunk(
            **base, choices=[ChunkChoice(delta=DeltaMessage(role="assistant", content=""))])
        finished = None
        async for delta in _prepend(first, rest):
            if delta.text:
                yield ChatCompletionChunk(
                    **base, choices=[ChunkChoice(delta=DeltaMessage(content=delta.text))])
            if delta.finish_reason is not None:
                finished = delta
                yield ChatCompletionChunk(
                    **base, choices=[ChunkChoice(delta=DeltaMessage(),
                                                 finish_reason=delta.finish_reason)],
                    route=route.describe())
        if finished is None:  # an upstream that stops without saying so has failed
            raise ProviderError("the stream ended before the model finished",
                                provider=route.provider.name, model=route.model)
        if request.include_usage() and finished.usage is not None:
            yield ChatCompletionChunk(**base, choices=[], usage=_wire_usage(finished.usage))


async def _prepend(first: Delta | None, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    if first is None:
        return
    yield first
    async for delta in rest:
        yield delta


def _wire_usage(usage: TokenUsage) -> Usage:
    return Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                 total_tokens=usage.total_tokens)


def _role(role: str) -> str:
    return "system" if role == "developer" else role


def model_table(local: Provider, config: AppConfig) -> dict[str, tuple[Provider, str]]:
    """Every accepted model name (concrete or alias) -> (provider, concrete model)."""
    table: dict[str, tuple[Provider, str]] = {}
    for model in config.served_local_models():
        spec = find_local_model(model.name)
        for name in (spec.name, *spec.aliases):
            table[name] = (local, spec.name)
    return table
