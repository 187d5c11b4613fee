"""OpenAI-compatible request and response models (the wire format of /v1/*), and the rules every
request model of the API follows (the seed's too: router/learnx_protocol.py).

Requests (`Wire`): a field this service does not act on is a 400 naming it, never silently dropped;
the only exceptions are the few parameters OpenAI itself treats as hints (`OpenAIHints`), accepted
with the values listed there and ignored. Responses: None is sent as null, as OpenAI's schemas require
of many fields (a stream chunk's `finish_reason`, a choice's `logprobs`, a message's `refusal`);
fields declared `omitted()` (our extensions, and optional fields OpenAI's schema does not let be null)
are left out while None. Dump response models without `exclude_none`."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from core.errors import InvalidRequest
from core.generation import TokenUsage
from core.ids import new_id
from models.catalog import ProviderName

# Control characters (C0, DEL, C1) and lone surrogates: never in an id. Text may hold tab, newline
# and carriage return, nothing else of C0. A NUL or a lone surrogate cannot even be stored (PostgreSQL
# refuses NUL in text; neither database can encode a lone surrogate as UTF-8).
_NOT_IN_IDS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def forbidden_character(value: str, pattern: re.Pattern[str] = _NOT_IN_IDS) -> str | None:
    """`U+0000 (a control character) at position 3`: the first character `pattern` forbids, or
    None."""
    found = pattern.search(value)
    if not found:
        return None
    code = ord(found.group())
    kind = "an unpaired UTF-16 surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
    return f"U+{code:04X} ({kind}) at position {found.start()}"


def _identifier(value: str) -> str:
    problem = forbidden_character(value)
    if problem:
        raise ValueError(f"must not contain control characters or unpaired surrogates "
                         f"(found {problem})")
    return value


# What the two rules allow, as JSON Schema patterns (the OpenAPI document states them).
ID_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
TEXT_PATTERN = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]*$"

# Ids and names: user ids (budgets, limits, the ledger), model names.
Identifier = Annotated[str, Field(min_length=1, max_length=256,
                                  json_schema_extra={"pattern": ID_PATTERN}),
                       AfterValidator(_identifier)]


def _text_problem(value: Any, path: str) -> str | None:
    """`path has U+0000 at position 3` for the first control character in any text of `value`
    (strings, dict keys and values, lists, models; a Wire model checks its own fields)."""
    if isinstance(value, str):
        problem = forbidden_character(value, _NOT_IN_TEXT)
        return f"{path} has {problem}" if problem else None
    if isinstance(value, Wire):
        return None
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, dict):
        children = [(f"{path}.{key}", item) for key, item in value.items()]
        children += [(f"{path} (a key)", key) for key in value]
    elif isinstance(value, list):
        children = [(f"{path}.{index}", item) for index, item in enumerate(value)]
    else:
        return None
    for child_path, child in children:
        problem = _text_problem(child, child_path)
        if problem:
            return problem
    return None


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


class Wire(BaseModel):
    # Every field is typed and acted on: an unknown one (logit_bias, functions, ...) is a 400 naming
    # it (router/api.py words it), since a silently dropped parameter is an answer to another request.
    # Strict: JSON's types as the OpenAPI document states them ("3" is no integer, 0 no boolean).
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        """JSON Schema's integer: 3.0 is 3 (a strict int field would refuse it)."""
        if not isinstance(data, dict):
            return data
        return {key: int(value) if isinstance(value, float) and value.is_integer() else value
                for key, value in data.items()}

    @field_validator("*")
    @classmethod
    def _valid_text(cls, value: Any, info: ValidationInfo) -> Any:
        """Text may hold tab, newline and carriage return, no other control character and no
        unpaired surrogate; the error names the field (and the item within it)."""
        problem = _text_problem(cls._checked_text(info.field_name or "", value),
                                info.field_name or "")
        if problem:
            raise ValueError(f"not valid text: {problem}; send well-formed UTF-8 without control "
                             "characters other than tab and newline")
        return value

    @classmethod
    def _checked_text(cls, field: str, value: Any) -> Any:
        """What of a field's value the text rule applies to: all of it, unless a model says."""
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


class StreamOptions(Wire):
    include_usage: bool = False
    include_obfuscation: bool | None = Field(
        None, description="Advisory: ignored; chunks carry no obfuscation padding.")


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


# A seed as engines take it (torch and vLLM: a 64-bit integer), as OpenAI bounds it.
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]

# The default router.max_tokens_limit; a deployment may allow more.
MAX_TOKENS: JsonDict = {"maximum": 4096,
                        "description": "at most router.max_tokens_limit (4096 by default)"}


class ChatCompletionRequest(OpenAIHints):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model": "smollm2-135m", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Explain photosynthesis to a 10 year old."}]}]})

    model: Identifier
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1, json_schema_extra=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, json_schema_extra=MAX_TOKENS)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    n: Annotated[Literal[1], BeforeValidator(_not_a_bool)] = 1
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    user: Identifier | None = None  # the end user: budgets, limits
    # Our extension: providers to try first, in order ("local", "openai", "anthropic").
    preferred_providers: list[ProviderName] = Field(default_factory=list)
    prompt_cache: bool = Field(True, description=(
        "Our extension: false keeps the service from caching the shared prefix on purpose (no "
        "cache_control breakpoint of ours, no derived prompt_cache_key); the caller's own are "
        "sent either way."))

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _is_none(value: Any) -> bool:
    return value is None


def omitted(description: str | None = None) -> Any:
    """A response field that is left out of the body while None (see the module's docstring)."""
    return Field(None, exclude_if=_is_none, description=description)


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0  # read from the provider's prompt cache
    cache_write_tokens: int = 0  # written to it (Anthropic's cache_creation_input_tokens)


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class CompletionUsage(BaseModel):
    """OpenAI's convention, whichever provider served: prompt_tokens counts every prompt token,
    those read from or written to the provider's prompt cache included (the details say how many);
    completion_tokens includes the reasoning tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = Field(
        default_factory=CompletionTokensDetails)

    @classmethod
    def of(cls, usage: TokenUsage) -> CompletionUsage:
        return cls(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                   total_tokens=usage.total_tokens,
                   prompt_tokens_details=PromptTokensDetails(
                       cached_tokens=usage.cached_tokens,
                       cache_write_tokens=usage.cache_write_tokens),
                   completion_tokens_details=CompletionTokensDetails(
                       reasoning_tokens=usage.reasoning_tokens))


def _chat_id() -> str:
    return new_id("chatcmpl-")


def _now() -> int:
    return int(time.time())


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None  # null when the answer is only tool calls
    refusal: None = None
    tool_calls: list[ToolCallOut] | None = omitted()


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=_chat_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    # Our extension: which provider/model served the request and why (ignored by OpenAI clients).
    route: dict[str, Any] | None = omitted()


class FunctionCallChunk(BaseModel):
    name: str | None = omitted()
    arguments: str | None = omitted()


class ToolCallChunk(BaseModel):
    """A piece of a streamed call: the first has its id, type and name, the rest only arguments."""

    index: int
    id: str | None = omitted()
    type: Literal["function"] | None = omitted()
    function: FunctionCallChunk


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = omitted()
    content: str | None = omitted()
    tool_calls: list[ToolCallChunk] | None = omitted()


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    # With stream_options.include_usage: on the last chunk, whose choices are empty.
    usage: CompletionUsage | None = omitted()
    route: dict[str, Any] | None = omitted()


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(
        description="floats, or with encoding_format base64 a base64 string of little-endian "
                    "float32s")


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[EmbeddingObject]
    usage: EmbeddingUsage


class ErrorDetail(BaseModel):
    type: str = Field(description="the error's kind, e.g. invalid_request_error, rate_limit_error")
    message: str = Field(description="what happened and what to do about it")
    code: str | None = Field(description="a stable code, e.g. model_not_found, rate_limited")
    param: str | None = Field(description="the parameter or header at fault, if one is")
    tried: list[str] | None = omitted(
        "all_providers_failed: the provider/model of each attempt, in order")


class ErrorResponse(BaseModel):
    """Every error, on every route, in OpenAI's shape (core/errors.py: the one status table)."""

    error: ErrorDetail


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

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


_HEADER_ID = re.compile(r"[\x21-\x7e]{1,128}")


def header_id(name: str, value: str | None) -> str | None:
    """A caller's id header (X-Request-Id, Idempotency-Key): 1-128 visible ASCII characters; an
    absent or empty header is None."""
    if not value:
        return None
    if _HEADER_ID.fullmatch(value) is None:
        problem = forbidden_character(value, re.compile(r"[^\x21-\x7e]")) or "over 128 characters"
        raise InvalidRequest(f"the {name} header must be 1-128 visible ASCII characters "
                             f"(found {problem})", param=name)
    return value
