"""Chat completions: from an OpenAI request, through the policy's ranking, to a provider call and back
to OpenAI's wire format with usage, cost and the route taken."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from core.breakers import Breakers
from core.config import AppConfig, LocalModelConfig, RouterConfig
from core.errors import InvalidRequest, LimitExceeded
from core.generation import CacheBreakpoint, Completion, Delta, GenerationParams
from core.pricing import prompt_estimate
from core.schema import SchemaError, check_schema
from core.tracing import Tracing
from models.catalog import ModelCard, local_card
from models.registry import ToolCalling
from router.run import spans
from router.run.attempts import Route, Switch
from router.run.fallback import Run
from router.run.policy import PolicySettings, RouteRequest, rank
from router.run.providers import Provider
from router.run.spans import NO_SPANS, RunSpans
from router.run.ttft import FirstTokenLimits
from router.services.generation import Answered, Streamed
from router.services.prompt_caches import KnownCaches
from router.services.tools import chat_messages, tool_calling, tool_fields
from router.usage.admission import Allowance
from router.usage.meter import Meter
from router.wire.generation import GenerationRequest
from router.wire.openai import ChatCompletionRequest
from router.wire.replies import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    CompletionUsage,
    DeltaMessage,
    FunctionCallChunk,
    FunctionCallOut,
    ToolCallChunk,
    ToolCallOut,
    chat_id,
    unix_now,
)
from router.wire.sse import peek


def build_catalog(config: AppConfig) -> list[ModelCard]:
    local = [local_card(m.name, m.llama_cpp.n_ctx if m.engine == "llama_cpp"
                        else (m.vllm.max_model_len or 10**9),
                        m.input_per_million, m.output_per_million, _tool_calling(m))
             for m in config.served_local_models()]
    return [*local, *config.catalog.hosted()]


def _tool_calling(model: LocalModelConfig) -> ToolCalling | None:
    """A vLLM model with its tool parser and auto tool choice decides when to call tools; any
    other local model calls them as its registry entry says."""
    auto = model.engine == "vllm" and model.vllm.enable_auto_tool_choice
    return "auto" if auto else None


def queue_group(meter: Meter | None) -> str | None:
    """The group whose fair share of a local engine's slots a request takes: the caller's class
    within its tenant, or the tenant's when it names none."""
    if meter is None:
        return None
    caller = meter.caller
    return caller.tenant if caller.group is None else f"{caller.tenant}/{caller.group}"


class ChatService:
    def __init__(self, config: RouterConfig, providers: dict[str, Provider],
                 catalog: list[ModelCard], health: Breakers, first_token: FirstTokenLimits,
                 tracing: Tracing | None = None):
        self._config = config
        self._spans = RunSpans(tracing) if tracing is not None else None
        self._providers = providers
        self._catalog = catalog
        self._health = health
        self._first_token = first_token
        self._policy = PolicySettings(config.default_provider, config.enable_cost_optimization)
        self.caches = KnownCaches()

    def catalog(self) -> list[ModelCard]:
        return self._catalog

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()

    def providers(self) -> list[str]:
        return list(self._providers)

    def available_models(self) -> list[ModelCard]:
        return [c for c in self._catalog if c.provider in self._providers]

    def plan(self, model: str, preferred: list[str], params: GenerationParams) -> list[Route]:
        kind = "chat" if params.prompt is None else "completion"
        ranked = rank(RouteRequest(model, prompt_estimate(params), params.max_tokens, tuple(preferred),
                                   kind, tool_calling(params),
                                   tuple(self.caches.held(params).items())),
                      self._catalog, set(self._providers), self._policy)
        return [Route(self._providers[c.card.provider], c) for c in ranked]

    async def run(self, model: str, preferred: list[str], params: GenerationParams,
                  meter: Meter | None = None) -> Run:
        """A request's journey over the policy's ranking (breakers, retries, fallback), within the
        caller's budget: its admission holds its cost, or narrows the ranking to free models."""
        spans.requested(model)
        routes, allowance = self.plan(model, preferred, params), None
        if meter is not None:
            routes, allowance = await meter.admission.routes(
                routes, prompt_estimate(params) + params.max_tokens)
        return self.start(routes, allowance, meter)

    def start(self, routes: list[Route], allowance: Allowance | None, meter: Meter | None) -> Run:
        """A run over routes the admission has already held budget for (`allowance`)."""
        run = Run(routes, self._config, self._health, budget=allowance,
                  first_token=self._first_token,
                  tier=meter.tier if meter is not None else "interactive",
                  group=queue_group(meter), spans=self._spans or NO_SPANS)
        if meter is not None:
            meter.track(run, allowance)
        return run

    def check_messages(self, count: int, param: str = "messages") -> None:
        """At most the configured number of messages (or input items) in one request."""
        if count > self._config.max_messages:
            raise LimitExceeded(f"{count} messages in one request; the limit is "
                                f"{self._config.max_messages}: summarize or drop older turns",
                                param=param)

    def max_tokens(self, requested: int | None, param: str = "max_tokens") -> int:
        """The tokens to generate at most: `requested` or the configured default, within the limit."""
        max_tokens = requested or self._config.default_max_tokens
        if max_tokens > self._config.max_tokens_limit:
            raise InvalidRequest(
                f"{param} is {max_tokens}; it must be between 1 and "
                f"{self._config.max_tokens_limit}", param=param)
        return max_tokens

    def params(self, request: ChatCompletionRequest) -> GenerationParams:
        self.check_messages(len(request.messages))
        for name in ("max_completion_tokens", "max_tokens"):  # each within the limit
            self.max_tokens(getattr(request, name), param=name)
        tools = tool_fields(request)
        return GenerationParams(
            messages=chat_messages(request.messages, bool(tools["tools"])),
            max_tokens=self.max_tokens(request.requested_max_tokens()),
            temperature=request.temperature, top_p=request.top_p,
            stop=request.stop_list(), seed=request.seed, json_schema=_json_schema(request),
            prompt_cache=request.prompt_cache, prompt_cache_key=request.prompt_cache_key,
            cache_breakpoints=tuple(CacheBreakpoint(index, offset, ttl)
                                    for index, message in enumerate(request.messages)
                                    for offset, ttl in message.cache_ends()),
            **tools)

    async def run_for(self, request: GenerationRequest, params: GenerationParams,
                      meter: Meter | None) -> Run:
        """A run of `params` for a request of any generation route, over its model and its
        preferred providers."""
        return await self.run(request.model, list(request.preferred_providers), params, meter)

    async def complete(self, request: ChatCompletionRequest, meter: Meter) -> Answered:
        params = self.params(request)
        run = await self.run_for(request, params, meter)
        completion, route = await run.complete(params)
        report = run.report()
        self.caches.learn(params, report)
        return Answered(ChatCompletion(
            model=route.model,
            choices=[Choice(message=_message(completion), finish_reason=completion.finish_reason)],
            usage=CompletionUsage.of(report.usage), route=report.route_info()).model_dump(),
            route.header())

    async def stream(self, request: ChatCompletionRequest, meter: Meter) -> Streamed:
        params = self.params(request)
        run = await self.run_for(request, params, meter)
        _, events = await peek(run.stream(params))
        return Streamed(self._chunks(request, params, run, run.route, events), run.route.header())

    async def _chunks(self, request: ChatCompletionRequest, params: GenerationParams, run: Run,
                      route: Route, events: AsyncIterator[Delta | Switch]
                      ) -> AsyncIterator[ChatCompletionChunk]:
        base = {"id": chat_id(), "created": unix_now(), "model": route.model}
        yield ChatCompletionChunk(
            **base, choices=[ChunkChoice(delta=DeltaMessage(role="assistant", content=""))])
        async for event in events:
            if isinstance(event, Switch):
                yield ChatCompletionChunk(**base, choices=[], route={"fallback": {
                    "from": event.from_route, "to": event.to_route, "error": event.error}})
                continue
            if event.text or event.tool_calls:
                yield ChatCompletionChunk(**base, choices=[ChunkChoice(delta=DeltaMessage(
                    content=event.text or None, tool_calls=_call_chunks(event) or None))])
            if event.finish_reason is not None:
                report = run.report()
                self.caches.learn(params, report)
                yield ChatCompletionChunk(**base, route=report.route_info(), choices=[
                    ChunkChoice(delta=DeltaMessage(), finish_reason=event.finish_reason)])
                if request.include_usage():
                    yield ChatCompletionChunk(**base, choices=[], usage=CompletionUsage.of(report.usage))


def _message(completion: Completion) -> AssistantMessage:
    """The answer's message: its text (null when it is only tool calls) and its calls."""
    calls = [ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments))
             for c in completion.tool_calls]
    return AssistantMessage(content=completion.text if completion.text or not calls else None,
                            tool_calls=calls or None)


def _call_chunks(delta: Delta) -> list[ToolCallChunk]:
    """Tool call pieces as OpenAI streams them: a call's first piece has its id, type and name."""
    return [ToolCallChunk(index=c.index, id=c.id, type="function" if c.id else None,
                          function=FunctionCallChunk(name=c.name, arguments=c.arguments))
            for c in delta.tool_calls]


def _json_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    """The output's schema ({} = any JSON object), bounded before any model sees it."""
    if request.response_format is None or request.response_format.type == "text":
        return None
    found = request.response_format.json_schema
    schema = found.schema_ if found is not None else {}
    try:
        check_schema(schema)
    except SchemaError as error:
        where = ".".join(filter(None, ("response_format.json_schema.schema", error.where)))
        raise InvalidRequest(f"{where}: {error.problem}", param=where) from None
    return schema
