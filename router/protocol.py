"""OpenAI-compatible request and response models (the wire format of /v1/*)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from content.profile import LearnerProfile, LearningStyle, difficulty_level
from content.templates import ContentType
from core.errors import InvalidRequest
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


# Ids and names: user ids (budgets, limits, the ledger), model names.
Identifier = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_identifier)]


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


class Wire(BaseModel):
    # Unknown fields from OpenAI clients (logit_bias, user, ...) are accepted and ignored, like OpenAI's
    # own server does for fields it deprecates; what we act on is typed and validated.
    model_config = ConfigDict(extra="ignore")

    @field_validator("*")
    @classmethod
    def _valid_text(cls, value: Any, info: ValidationInfo) -> Any:
        """Text may hold tab, newline and carriage return, no other control character and no
        unpaired surrogate; the error names the field (and the item within it)."""
        problem = _text_problem(value, info.field_name or "")
        if problem:
            raise ValueError(f"not valid text: {problem}; send well-formed UTF-8 without control "
                             "characters other than tab and newline")
        return value


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
    content: str | list[dict[str, Any]] | None = None
    name: Identifier | None = None
    tool_calls: list[MessageToolCall] | None = None  # assistant turns
    tool_call_id: Identifier | None = None  # tool turns: the call this result answers

    @field_validator("content")
    @classmethod
    def _text_only(cls, content: str | list[dict[str, Any]] | None
                   ) -> str | list[dict[str, Any]] | None:
        """Only text parts (errors name the message: `messages.2.content: part 0: ...`)."""
        for index, part in enumerate(content if isinstance(content, list) else []):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"part {index}: only text content parts are supported")
        return content

    def text(self) -> str:
        """The content as one text (OpenAI content parts joined)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part["text"] for part in self.content)


class StreamOptions(Wire):
    include_usage: bool = False


class ResponseFormat(Wire):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(Wire):
    model: Identifier
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    n: Literal[1] = 1
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    user: Identifier | None = None  # the end user: budgets, limits
    # Our extension: providers to try first, in order ("local", "openai", "anthropic").
    preferred_providers: list[ProviderName] = Field(default_factory=list)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return stop

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


class CompletionUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def _chat_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _now() -> int:
    return int(time.time())


class KeepsNulls(BaseModel):
    """A response object whose `NULLS` fields are sent as null when empty, never left out (OpenAI's
    schema requires them), even where the response is dumped with exclude_none (router/routes.py,
    router/sse.py)."""

    NULLS: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _keep_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self.NULLS:
            data.setdefault(name, None)
        return data


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AssistantMessage(KeepsNulls):
    NULLS = ("content", "refusal")

    role: Literal["assistant"] = "assistant"
    content: str | None  # null when the answer is only tool calls
    refusal: None = None
    tool_calls: list[ToolCallOut] | None = omitted()


class Choice(KeepsNulls):
    NULLS = ("logprobs",)

    index: int = 0
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=_chat_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    # Our extension: which provider/model served the request and why (ignored by OpenAI clients).
    route: dict[str, Any] | None = None


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
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallChunk] | None = omitted()


class ChunkChoice(KeepsNulls):
    NULLS = ("finish_reason",)

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
    usage: CompletionUsage | None = None
    route: dict[str, Any] | None = None


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class EmbeddingsRequest(Wire):
    """OpenAI's /v1/embeddings (text input only)."""

    model: Identifier
    input: str | Annotated[list[str], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=3072)
    user: Identifier | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


class SeedEmbeddingsRequest(Wire):
    """The seed's /api/v1/ai/embeddings."""

    texts: Annotated[list[str], Field(min_length=1)]
    model: Identifier | None = None
    use_cache: bool = True
    deduplicate: bool = True
    user_id: Identifier | None = None


class GenerateContentRequest(Wire):
    """The seed's /api/v1/ai/generate-content."""

    content: str = Field(min_length=1, max_length=50_000)
    content_type: ContentType
    persona: LearnerProfile | LearningStyle | None = None
    user_profile: LearnerProfile | None = None
    difficulty: int | Literal["beginner", "intermediate", "advanced"] = "intermediate"
    recent_score: float | None = Field(None, ge=0, le=1, description="last quiz score, 0-1")
    user_id: Identifier | None = None
    model: Identifier = "small"
    preferred_providers: list[ProviderName] = Field(default_factory=list)
    max_tokens: int | None = Field(None, ge=16, le=4096)
    stream: bool = True

    @field_validator("difficulty", mode="wrap")
    @classmethod
    def _difficulty(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> int | str:
        """One clear error for the field, not one per member of its union."""
        try:
            level: int | str = handler(value)
        except ValidationError:
            raise ValueError("difficulty must be 1-5 or one of beginner, intermediate, "
                             "advanced") from None
        difficulty_level(level)  # raises ValueError naming what is allowed
        return level

    def profile(self) -> LearnerProfile:
        if self.user_profile is not None:
            return self.user_profile
        if isinstance(self.persona, LearnerProfile):
            return self.persona
        return LearnerProfile(learning_style=self.persona) if self.persona else LearnerProfile()


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
