"""Legacy text completions' wire format (POST /v1/completions), as OpenAI publishes it: the request
(`CreateCompletionRequest`) for one text prompt, the `text_completion` object and its stream
chunks (`CreateCompletionResponse`)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator

from core.ids import new_id
from router.wire.generation import MAX_TOKENS, SampledRequest
from router.wire.params import Fixed
from router.wire.replies import CompletionUsage, unix_now
from router.wire.rules import omitted


class CompletionRequest(SampledRequest):
    # Accepted only at these values (router/wire/params.py), each with what to do instead.
    FIXED: ClassVar[Fixed] = {
        "echo": ((None, False), "only false: the prompt is not repeated in the answer"),
        "n": ((None, 1), "only 1: send one request per completion"),
        "best_of": ((None, 1), "only 1"),
        "logprobs": ((None,), "log probabilities are not available"),
        "suffix": ((None,), "insertion (a suffix after the completion) is not supported"),
        "logit_bias": ((None, {}), "token biases are not supported"),
        "frequency_penalty": ((None, 0, 0.0), "only 0"),
        "presence_penalty": ((None, 0, 0.0), "only 0"),
    }

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: int = Field(16, ge=1, json_schema_extra=MAX_TOKENS)  # OpenAI's default: 16
    # Accepted only at the values FIXED allows.
    echo: Any = None
    n: Any = None
    best_of: Any = None
    logprobs: Any = None
    suffix: Any = None
    logit_bias: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, prompt: Any) -> Any:
        """One error for the field, not one per member of its union."""
        if isinstance(prompt, list) and (len(prompt) != 1 or not isinstance(prompt[0], str)):
            raise ValueError("one text prompt per request: a string, or a list of one string "
                             "(token arrays and batches are not supported)")
        return prompt

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def completion_id() -> str:
    return new_id("cmpl-")


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    # Null until the stream's last chunk, as OpenAI streams it; always set in a whole response.
    finish_reason: Literal["stop", "length", "content_filter"] | None


class TextCompletion(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=unix_now)
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = omitted()
    # Our extension: which provider/model served the request and why, its cost, the path taken.
    route: dict[str, Any] | None = omitted()

    def wire(self) -> dict[str, Any]:
        """As sent: null where OpenAI's clients expect the key (logprobs, a streamed chunk's
        finish_reason), absent where the schema has no null (usage, route)."""
        return self.model_dump(mode="json")
