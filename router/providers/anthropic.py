"""Anthropic Messages API through the official SDK, translated to and from OpenAI-shaped chat."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import anthropic

from core.config import HostedProviderConfig
from core.errors import ProviderError, ServiceError
from core.generation import Delta, GenerationParams, TokenUsage
from core.sdk import translate_sdk_error

TOOL = "emit_answer"
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                "tool_use": "tool_calls", "refusal": "content_filter", "pause_turn": "stop"}


def to_anthropic(model: str, params: GenerationParams) -> dict[str, Any]:
    """System messages become `system`; consecutive same-role turns merge (Anthropic alternates)."""
    system = [m["content"] for m in params.messages if m["role"] == "system"]
    if params.json_schema == {}:  # any JSON object: Anthropic has no JSON mode without a schema
        system.append("Respond with one JSON object only, no prose.")
    turns: list[dict[str, str]] = []
    for message in params.messages:
        if message["role"] == "system":
            continue
        role = "assistant" if message["role"] == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1] = {"role": role, "content": f"{turns[-1]['content']}\n\n{message['content']}"}
        else:
            turns.append({"role": role, "content": message["content"]})
    # No temperature/top_p: the current Messages API (SDK 2.x) no longer takes sampling parameters.
    request: dict[str, Any] = {"model": model, "messages": turns, "max_tokens": params.max_tokens}
    if system:
        request["system"] = "\n\n".join(system)
    if params.stop:
        request["stop_sequences"] = params.stop
    if params.json_schema:  # a schema: Anthropic's structured output is a forced tool call
        request["tools"] = [{"name": TOOL, "description": "Return the answer as this JSON object.",
                             "input_schema": params.json_schema}]
        request["tool_choice"] = {"type": "tool", "name": TOOL}
    return request


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, client: anthropic.AsyncAnthropic):
        self._client = client

    @classmethod
    def from_env(cls, config: HostedProviderConfig,
                 environ: Mapping[str, str]) -> AnthropicProvider | None:
        key = environ.get("ANTHROPIC_API_KEY")
        if not config.enabled or not key:
            return None
        # base_url None lets the SDK apply ANTHROPIC_BASE_URL itself. Our retries, not the SDK's.
        return cls(anthropic.AsyncAnthropic(api_key=key, base_url=config.base_url, max_retries=0,
                                            timeout=config.timeout_s))

    async def aclose(self) -> None:
        await self._client.close()

    async def stream(self, model: str, params: GenerationParams) -> AsyncGenerator[Delta, None]:
        prompt_tokens, completion_tokens, stop_reason, stopped = 0, 0, None, False
        try:
            stream = await self._client.messages.create(**to_anthropic(model, params), stream=True)
            async with stream:
                async for event in stream:
                    if event.type == "message_start":
                        prompt_tokens = event.message.usage.input_tokens
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        yield Delta(event.delta.text)
                    elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                        yield Delta(event.delta.partial_json)  # the forced tool's JSON arguments
                    elif event.type == "message_delta":
                        stop_reason = event.delta.stop_reason
                        completion_tokens = event.usage.output_tokens
                    elif event.type == "message_stop":
                        stopped = True
        except (anthropic.APIError, ValueError) as error:  # ValueError: JSON that does not parse
            raise _billed(_translate(model, error), prompt_tokens, completion_tokens) from None
        if not stopped:
            raise _billed(ProviderError("the stream ended without message_stop",
                                        provider="anthropic", model=model),
                          prompt_tokens, completion_tokens)
        if stop_reason == "tool_use" and params.json_schema:
            stop_reason = "end_turn"  # the tool call we forced is the answer, not a tool request
        yield Delta("", finish_reason=STOP_REASONS.get(stop_reason or "", "stop"),
                    usage=TokenUsage(prompt_tokens, completion_tokens))


def _billed(error: ServiceError, prompt_tokens: int, completion_tokens: int) -> ServiceError:
    """Once message_start reported the prompt's tokens, a stream that then fails is billed them."""
    if isinstance(error, ProviderError) and prompt_tokens:
        error.usage = TokenUsage(prompt_tokens, completion_tokens)
    return error


def _translate(model: str, error: Exception) -> ServiceError:
    return translate_sdk_error(anthropic, "anthropic", model, error)
