"""OpenAI-compatible request models (the wire format of /v1/chat/completions and /v1/embeddings);
what the service answers is router/wire/replies.py, the rules both follow router/wire/rules.py.

A field this service does not act on is a 400 naming it, never silently dropped; the only
exceptions are the few parameters OpenAI itself treats as hints (`OpenAIHints`), accepted with the
values listed there and ignored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
)
from pydantic.config import JsonDict

from router.wire.generation import MAX_TOKENS, SampledRequest
from router.wire.rules import GROUP, Identifier, Wire


def _a_bool(value: Any) -> Any:
    """A Literal of false: 0 is not false in JSON (in Python it equals False)."""
    if value is not None and not isinstance(value, bool):
        raise ValueError("must be a boolean")
    return value


def _not_a_bool(value: Any) -> Any:
    """A Literal of a number: true is not 1 in JSON (in Python it equals 1)."""
    if isinstance(value, bool):
        raise ValueError("must be a number")
    return value


# OpenAI's text content part, the only kind served (no images, audio or files), with Anthropic's
# `cache_control`: the prompt up to the end of the part is cached (on Anthropic models; ignored by
# the others, which cache by themselves).
CACHE_CONTROL: JsonDict = {
    "type": "object", "required": ["type"], "additionalProperties": False,
    "properties": {"type": {"const": "ephemeral"}, "ttl": {"enum": ["5m", "1h"]}}}
TextParts = Annotated[list[dict[str, Any]], WithJsonSchema({"type": "array", "items": {
    "type": "object", "required": ["type", "text"], "additionalProperties": False,
    "properties": {"type": {"const": "text"}, "text": {"type": "string"},
                   "cache_control": CACHE_CONTROL}}})]


def _part_problem(part: dict[str, Any]) -> str | None:
    if not {"type", "text"} <= set(part) <= {"type", "text", "cache_control"} \
            or part["type"] != "text" or not isinstance(part["text"], str):
        return 'only text content parts are supported ({"type": "text", "text": "..."})'
    control = part.get("cache_control", {"type": "ephemeral"})
    if not isinstance(control, dict) or control.get("type") != "ephemeral" \
            or not set(control) <= {"type", "ttl"} or control.get("ttl", "5m") not in ("5m", "1h"):
        return 'cache_control must be {"type": "ephemeral"} with an optional ttl "5m" or "1h"'
    return None


# OpenAI's rule for function names.
ToolName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
MAX_TOOLS = 128  # OpenAI's limit


class FunctionDefinition(Wire):
    name: ToolName
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = None  # a JSON schema of type object; bounded by core.schema
    strict: bool | None = None


class FunctionTool(Wire):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(Wire):
    name: ToolName


class NamedToolChoice(Wire):
    type: Literal["function"]
    function: FunctionName


class FunctionCall(Wire):
    name: ToolName
    arguments: str  # JSON text, as the model generated it


class MessageToolCall(Wire):
    """A call an earlier assistant turn made, sent back as part of the conversation."""

    id: Identifier
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | TextParts | None = None
    name: Identifier | None = None
    # What an earlier answer carried, sent back as history (`messages.append(choice.message)`).
    refusal: None = None
    tool_calls: list[MessageToolCall] | None = None  # assistant turns
    tool_call_id: Identifier | None = None  # tool turns: the call this result answers

    @field_validator("content")
    @classmethod
    def _text_only(cls, content: str | list[dict[str, Any]] | None
                   ) -> str | list[dict[str, Any]] | None:
        """Only text parts (errors name the message: `messages.2.content: part 0: ...`)."""
        for index, part in enumerate(content if isinstance(content, list) else []):
            problem = _part_problem(part)
            if problem:
                raise ValueError(f"part {index}: {problem}")
        return content

    def cache_ends(self) -> list[tuple[int, str]]:
        """(characters of text() up to the part's end, TTL) of each part with cache_control."""
        ends, length = [], 0
        for part in self.content if isinstance(self.content, list) else []:
            length += len(part["text"])
            if "cache_control" in part:
                ends.append((length, str(part["cache_control"].get("ttl", "5m"))))
        return ends

    def text(self) -> str:
        """The content as one text (OpenAI content parts joined)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part["text"] for part in self.content)


class OpenAIHints(Wire):
    """Parameters OpenAI itself treats as hints that do not change the answer, accepted with these
    values and ignored (README: "Supported parameters"). A value that asks for something this
    service does not do (`store: true`, `service_tier: "flex"`, `logprobs: true`, a penalty) is a
    400."""

    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16, description="Advisory: ignored (nothing is stored).")
    store: Annotated[Literal[False] | None, BeforeValidator(_a_bool)] = Field(
        None, description="Advisory: only false; this service stores no completions.")
    service_tier: Literal["auto", "default"] | None = Field(
        None, description="Advisory: every request gets the default processing.")
    prompt_cache_key: str | None = Field(
        None, max_length=1024, description="Sent on to OpenAI models (otherwise one is derived "
        "from the shared prefix: tools and leading system messages); ignored by the others.")
    prompt_cache_retention: Literal["in_memory", "24h"] | None = Field(
        None, description="Advisory: ignored.")
    safety_identifier: str | None = Field(
        None, max_length=64, description="Advisory: ignored; `user` names the end user here.")
    logprobs: Annotated[Literal[False] | None, BeforeValidator(_a_bool)] = Field(
        None, description="Only false: log probabilities are not returned.")
    frequency_penalty: Annotated[Literal[0] | None, BeforeValidator(_not_a_bool)] = Field(
        None, description="Only 0: no penalties.")
    presence_penalty: Annotated[Literal[0] | None, BeforeValidator(_not_a_bool)] = Field(
        None, description="Only 0: no penalties.")


class JsonSchemaFormat(Wire):
    name: str | None = Field(None, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(
        default_factory=dict, alias="schema",
        description="the answer's JSON Schema, within the supported subset and bounds (README: "
                    "Structured output); {} = any JSON object")
    strict: bool | None = None


class ResponseFormat(Wire):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None


class ChatCompletionRequest(OpenAIHints, SampledRequest):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model": "smollm2-135m", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Explain photosynthesis to a 10 year old."}]}]})

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1, json_schema_extra=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, json_schema_extra=MAX_TOKENS)
    response_format: ResponseFormat | None = None
    n: Annotated[Literal[1], BeforeValidator(_not_a_bool)] = 1
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    prompt_cache: bool = Field(True, description=(
        "Our extension: false keeps the service from caching the shared prefix on purpose (no "
        "cache_control breakpoint of ours, no derived prompt_cache_key); the caller's own are "
        "sent either way."))

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class EmbeddingsRequest(Wire):
    """OpenAI's /v1/embeddings (text input only)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "all-minilm-l6-v2", "input": ["Plants turn light into sugar."]}]})

    model: Identifier
    input: str | Annotated[list[str], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=3072, description=(
        "only for text-embedding-3 models (the local model has 384)"))
    user: Identifier | None = None
    group: Identifier | None = Field(None, description=GROUP)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input
