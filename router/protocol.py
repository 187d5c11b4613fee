"""OpenAI-compatible request and response models (the wire format of /v1/*)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from content.profile import LearnerProfile, LearningStyle, difficulty_level
from content.templates import ContentType
from models.catalog import ProviderName


class Wire(BaseModel):
    # Unknown fields from OpenAI clients (logit_bias, user, ...) are accepted and ignored, like OpenAI's
    # own server does for fields it deprecates; what we act on is typed and validated.
    model_config = ConfigDict(extra="ignore")


def valid_text(text: str) -> str:
    """Text that every model and store can take: Python decodes a JSON string with an unpaired
    surrogate escape ("\\ud800") into a str that cannot be encoded as UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError as error:
        raise ValueError(f"character {error.start} is an unpaired UTF-16 surrogate "
                         f"(U+{ord(text[error.start]):04X}), which is not valid text: send "
                         "well-formed UTF-8") from None
    return text


def valid_texts(texts: list[str], noun: str = "item") -> list[str]:
    for index, text in enumerate(texts):
        try:
            valid_text(text)
        except ValueError as error:
            raise ValueError(f"{noun} {index}: {error}") from None
    return texts


def _valid_text_or_texts(value: Any) -> Any:
    """For `str | list[str]` fields: the error names the field and the item, not the union."""
    if value is None or isinstance(value, str):
        return value if value is None else valid_text(value)
    return valid_texts(value)


Text = Annotated[str, AfterValidator(valid_text)]


class ChatMessage(Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: Text | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, content: str | list[dict[str, Any]] | None
                   ) -> str | list[dict[str, Any]] | None:
        """Only text, and valid text (errors name the message: `messages.2.content: ...`)."""
        if not isinstance(content, list):
            return content if content is None else valid_text(content)
        for index, part in enumerate(content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"part {index}: only text content parts are supported")
        valid_texts([part["text"] for part in content], noun="part")
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
    model: str = Field(min_length=1)
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: Annotated[str | list[str] | None, AfterValidator(_valid_text_or_texts)] = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    n: Literal[1] = 1
    user: Text | None = Field(None, min_length=1, max_length=256)  # the end user: budgets, limits
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


class CompletionUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def _chat_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _now() -> int:
    return int(time.time())


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
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


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


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

    model: str = Field(min_length=1)
    input: Annotated[str | Annotated[list[str], Field(min_length=1)],
                     AfterValidator(_valid_text_or_texts)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=3072)
    user: Text | None = Field(None, min_length=1, max_length=256)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


class SeedEmbeddingsRequest(Wire):
    """The seed's /api/v1/ai/embeddings."""

    texts: Annotated[list[str], Field(min_length=1), AfterValidator(valid_texts)]
    model: str | None = None
    use_cache: bool = True
    deduplicate: bool = True
    user_id: Text | None = Field(None, min_length=1, max_length=256)


class GenerateContentRequest(Wire):
    """The seed's /api/v1/ai/generate-content."""

    content: Text = Field(min_length=1, max_length=50_000)
    content_type: ContentType
    persona: LearnerProfile | LearningStyle | None = None
    user_profile: LearnerProfile | None = None
    difficulty: int | Literal["beginner", "intermediate", "advanced"] = "intermediate"
    recent_score: float | None = Field(None, ge=0, le=1, description="last quiz score, 0-1")
    user_id: Text | None = Field(None, min_length=1, max_length=256)
    model: str = "small"
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
