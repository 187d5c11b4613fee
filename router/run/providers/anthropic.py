"""Anthropic Messages API through the official SDK, translated to and from OpenAI-shaped chat."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import anthropic
import httpx2

from core.config import HostedProviderConfig
from core.errors import InvalidRequest, ProviderError, ServiceError
from core.generation import Delta, GenerationParams, TokenUsage, ToolCallDelta
from core.sdk import broken_transfer, translate_sdk_error
from core.tracing import continued
from models.catalog import KEY_ENV
from router.run.providers.caching import mark_shared_prefix, split_text

TOOL = "emit_answer"
MAX_TEMPERATURE = 1.0  # Anthropic's range is 0-1 (OpenAI's 0-2)
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                "tool_use": "tool_calls", "refusal": "content_filter", "pause_turn": "stop"}


def to_anthropic(model: str, params: GenerationParams,
                 cache_min_tokens: int | None = None) -> dict[str, Any]:
    """System messages become `system`; consecutive same-role turns merge (Anthropic alternates);
    tool calls become `tool_use` blocks and their results `tool_result` blocks of a user turn. The
    caller's cache breakpoints become `cache_control` on the text they end; with
    `cache_min_tokens`, one more marks the end of the shared prefix (router/run/providers/caching.py).
    What cannot be translated is the caller's error (InvalidRequest), raised before any call."""
    system = [block for index, m in enumerate(params.messages) if m["role"] == "system"
              for block in split_text(m["content"], index, params)]
    if params.json_schema == {}:  # any JSON object: Anthropic has no JSON mode without a schema
        system.append({"type": "text", "text": "Respond with one JSON object only, no prose."})
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(params.messages):
        if message["role"] == "system":
            continue
        role = "assistant" if message["role"] == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = _merged(turns[-1]["content"], _blocks(message, index, params))
        else:
            turns.append({"role": role, "content": _blocks(message, index, params)})
    request: dict[str, Any] = {"model": model, "max_tokens": params.max_tokens, "messages": [
        {"role": t["role"], "content": _compact(t["content"])} for t in turns],
        "extra_body": _sampling(params)}
    if system:
        request["system"] = _compact(system)
    if params.stop:
        request["stop_sequences"] = params.stop
    if params.json_schema:  # a schema: Anthropic's structured output is a forced tool call
        request["tools"] = [{"name": TOOL, "description": "Return the answer as this JSON object.",
                             "input_schema": params.json_schema}]
        request["tool_choice"] = {"type": "tool", "name": TOOL}
    elif params.tools:
        request["tools"] = [{"name": t.name, "input_schema": t.parameters,
                             **({"description": t.description} if t.description else {})}
                            for t in params.tools]
        request["tool_choice"] = _tool_choice(params)
    return mark_shared_prefix(request, params, cache_min_tokens)


def _sampling(params: GenerationParams) -> dict[str, float]:
    """temperature, and top_p unless 1 (no cut). SDK 2.x has no arguments for them, so they go in
    the body as the Messages API of the Claude 3.5 models takes them."""
    if params.temperature > MAX_TEMPERATURE:
        raise InvalidRequest(f"temperature: Anthropic models take 0 to {MAX_TEMPERATURE}; send "
                             f"at most {MAX_TEMPERATURE} or pick another model",
                             param="temperature")
    return {"temperature": params.temperature,
            **({"top_p": params.top_p} if params.top_p < 1 else {})}


def _arguments(call: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments as tool_use `input`: a JSON object (the router checks it; this keeps
    any other path from making our translation look like Anthropic's failure)."""
    try:
        arguments = json.loads(call["function"]["arguments"])
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise InvalidRequest(f"the arguments of tool call {call['id']!r} must be a JSON object")
    return arguments


def _blocks(message: dict[str, Any], index: int, params: GenerationParams) -> list[dict[str, Any]]:
    if message["role"] == "tool":
        return [{"type": "tool_result", "tool_use_id": message["tool_call_id"],
                 "content": message["content"]}]
    text = split_text(message["content"], index, params)
    calls = message.get("tool_calls") or []
    uses = [{"type": "tool_use", "id": c["id"], "name": c["function"]["name"],
             "input": _arguments(c)} for c in calls]
    return [*(text if message["content"] or not uses else []), *uses]


def _merged(blocks: list[dict[str, Any]], more: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two turns' blocks as one turn's; adjacent texts joined by a blank line (unless the first
    ends a cached prefix)."""
    if blocks and more and blocks[-1]["type"] == more[0]["type"] == "text" \
            and "cache_control" not in blocks[-1]:
        joined = {"type": "text", "text": f"{blocks[-1]['text']}\n\n{more[0]['text']}"}
        return [*blocks[:-1], joined, *more[1:]]
    return [*blocks, *more]


def _compact(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text only, no breakpoint: as a string, the Messages API's short form (texts joined by a
    blank line)."""
    if all(b["type"] == "text" and "cache_control" not in b for b in blocks):
        return "\n\n".join(b["text"] for b in blocks)
    return blocks


def _tool_choice(params: GenerationParams) -> dict[str, Any]:
    kinds: dict[str, dict[str, Any]] = {"auto": {"type": "auto"}, "required": {"type": "any"},
                                        "none": {"type": "none"}}
    choice = kinds.get(params.tool_choice, {"type": "tool", "name": params.tool_choice})
    if not params.parallel_tool_calls and choice["type"] != "none":
        choice = {**choice, "disable_parallel_tool_use": True}
    return choice


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, client: anthropic.AsyncAnthropic, cache_min_tokens: int | None = None):
        self._client = client
        self._cache_min_tokens = cache_min_tokens

    @classmethod
    def from_env(cls, config: HostedProviderConfig,
                 environ: Mapping[str, str]) -> AnthropicProvider | None:
        key = environ.get(KEY_ENV["anthropic"])
        if not config.enabled or not key:
            return None
        # base_url None lets the SDK apply ANTHROPIC_BASE_URL itself. Our retries, not the SDK's.
        return cls(anthropic.AsyncAnthropic(api_key=key, base_url=config.base_url, max_retries=0,
                                            timeout=config.timeout_s),
                   config.prompt_cache_min_tokens)

    async def aclose(self) -> None:
        await self._client.close()

    async def stream(self, model: str, params: GenerationParams) -> AsyncGenerator[Delta, None]:
        counts: dict[str, Any] = {}  # the usage reported so far (message_delta's is cumulative)
        stop_reason, stopped = None, False
        calls, answer = _ToolUses(), bool(params.json_schema)
        # Outside the try: our own translation failing is the caller's error, never an outage.
        request = to_anthropic(model, params, self._cache_min_tokens)
        try:
            with continued(params.trace):  # the SDK sends the current trace context itself
                stream = await self._client.messages.create(**request, stream=True,
                                                            extra_headers=params.trace)
            async with stream:
                async for event in stream:
                    if event.type == "message_start":
                        counts = reported(counts, event.message.usage, skip="output_tokens")
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        yield Delta(event.delta.text)
                    elif answer and event.type == "content_block_delta" \
                            and event.delta.type == "input_json_delta":
                        yield Delta(event.delta.partial_json)  # the forced tool's JSON arguments
                    elif not answer and event.type in ("content_block_start", "content_block_delta",
                                                       "content_block_stop"):
                        delta = calls.delta(event)
                        if delta is not None:
                            yield delta
                    elif event.type == "message_delta":
                        stop_reason = event.delta.stop_reason
                        counts = reported(counts, event.usage)
                    elif event.type == "message_stop":
                        stopped = True
        except (anthropic.APIError, ValueError, httpx2.TransportError) as error:  # ValueError: bad JSON
            if stop_reason is None or not broken_transfer(anthropic, error):
                raise _billed(_translate(model, error), anthropic_usage(counts)) from None
            stopped = True  # message_delta came: the answer and its usage are whole
        if not stopped:
            raise _billed(ProviderError("the stream ended without message_stop",
                                        provider="anthropic", model=model),
                          anthropic_usage(counts))
        if stop_reason == "tool_use" and params.json_schema:
            stop_reason = "end_turn"  # the tool call we forced is the answer, not a tool request
        yield Delta("", finish_reason=STOP_REASONS.get(stop_reason or "", "stop"),
                    usage=anthropic_usage(counts))


class _ToolUses:
    """A stream's `tool_use` blocks as OpenAI tool call deltas, numbered from 0 in their order."""

    def __init__(self) -> None:
        self._calls: dict[int, int] = {}  # content block index -> tool call index
        self._sent: set[int] = set()  # calls whose arguments have begun

    def delta(self, event: Any) -> Delta | None:
        if event.index not in self._calls and event.type != "content_block_start":
            return None  # a text block's start or stop
        if event.type == "content_block_start":
            block = event.content_block
            if block.type != "tool_use":
                return None
            self._calls[event.index] = len(self._calls)
            return Delta("", tool_calls=(ToolCallDelta(self._calls[event.index], block.id,
                                                       block.name),))
        index = self._calls[event.index]
        if event.type == "content_block_stop":  # a call without arguments sent none: {}
            return None if index in self._sent else Delta("", tool_calls=(
                ToolCallDelta(index, arguments="{}"),))
        if event.delta.type != "input_json_delta" or not event.delta.partial_json:
            return None
        self._sent.add(index)
        return Delta("", tool_calls=(ToolCallDelta(index, arguments=event.delta.partial_json),))


def reported(counts: dict[str, Any], usage: Any, skip: str = "") -> dict[str, Any]:
    """`counts` updated with the counts a message_start or message_delta event reports (a
    message_delta's are cumulative and may leave the prompt's out; message_start's output_tokens
    is a placeholder, skipped)."""
    return {**counts, **{k: v for k, v in usage.model_dump().items() if v is not None and k != skip}}


def anthropic_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """Anthropic's usage (a message's, or a stream's events' together) in OpenAI's convention: its
    input_tokens exclude the cache's reads and writes, which are added to the prompt's tokens.
    Writes are split by lifetime where `cache_creation` reports them so."""
    read = usage.get("cache_read_input_tokens") or 0
    lifetimes = usage.get("cache_creation") or {}
    written_1h = lifetimes.get("ephemeral_1h_input_tokens") or 0
    written = ((lifetimes.get("ephemeral_5m_input_tokens") or 0) + written_1h if lifetimes
               else usage.get("cache_creation_input_tokens") or 0)
    thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens") or 0
    return TokenUsage((usage.get("input_tokens") or 0) + read + written,
                      usage.get("output_tokens") or 0, cached_tokens=read,
                      cache_write_tokens=written, cache_write_1h_tokens=written_1h,
                      reasoning_tokens=thinking)


def _billed(error: ServiceError, usage: TokenUsage) -> ServiceError:
    """Once message_start reported the prompt's tokens, a stream that then fails is billed them."""
    if isinstance(error, ProviderError) and usage.prompt_tokens:
        error.usage = usage
    return error


def _translate(model: str, error: Exception) -> ServiceError:
    return translate_sdk_error(anthropic, "anthropic", model, error)
