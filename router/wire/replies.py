"""OpenAI-compatible response models: chat completions and their stream chunks, usage, models,
embeddings and errors (the requests are router/wire/openai.py).

None is sent as null, as OpenAI's schemas require of many fields (a stream chunk's `finish_reason`,
a choice's `logprobs`, a message's `refusal`); fields declared `omitted()` (our extensions, and
optional fields OpenAI's schema does not let be null) are left out while None. Dump response models
without `exclude_none`."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
)

from core.generation import TokenUsage
from core.ids import new_id
from router.wire.rules import omitted


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


def chat_id() -> str:
    return new_id("chatcmpl-")


def unix_now() -> int:
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
    id: str = Field(default_factory=chat_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=unix_now)
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
    level: Literal["tenant", "group", "learner_share", "user"] | None = omitted(
        "budget_exceeded: whose budget cannot cover the request (a learner's share: of their "
        "group's budget)")
    period: Literal["day", "week", "month", "term"] | None = omitted(
        "budget_exceeded: the period of that budget")


class ErrorResponse(BaseModel):
    """Every error, on every route, in OpenAI's shape (core/errors.py: the one status table)."""

    error: ErrorDetail


RunState = Literal["running", "completed", "stopped", "abandoned"]  # router/services/runs.py


class RunStatus(BaseModel):
    """A run (a stream's generation, router/services/runs.py) and how it stands: abandoned runs
    were cancelled after their last client had been gone for the grace period."""

    id: str
    object: Literal["run"] = "run"
    status: RunState
