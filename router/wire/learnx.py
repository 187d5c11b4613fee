"""The LEARN-X API's own models: the seed's /api/v1/ai/* routes (generate-content, embeddings) and
the service's health and usage routes. Same rules as the OpenAI models (router/wire/rules.py)."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from content.profile import (
    LearnerProfile,
    LearningStyle,
    PersonaText,
    learning_style,
)
from content.templates import ContentType
from router.wire.generation import GenerationRequest
from router.wire.rules import GROUP, Identifier, Wire, omitted


class SeedEmbeddingsRequest(Wire):
    """The seed's /api/v1/ai/embeddings."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"texts": ["Plants turn light into sugar.", "Cells divide."]}]})

    texts: Annotated[list[str], Field(min_length=1)]
    model: Identifier | None = None
    use_cache: bool = True
    deduplicate: bool = True
    user_id: Identifier | None = None
    group_id: Identifier | None = Field(None, description=GROUP)


class GenerateContentRequest(GenerationRequest):
    """The seed's /api/v1/ai/generate-content."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "content": "Photosynthesis: plants use light, water and carbon dioxide to make sugar.",
        "content_type": "explanation", "stream": True,
        "persona": "A visual learner in grade 7 who loves football."}]})

    content: str = Field(min_length=1, max_length=50_000)
    content_type: ContentType
    persona: LearnerProfile | LearningStyle | PersonaText | None = Field(None, description=(
        "a learner profile, one of the learning styles, or a sentence describing the learner "
        "(used as the learner's own words: it shapes the content, never the instructions)"))
    user_profile: LearnerProfile | None = None
    difficulty: Annotated[int, Field(ge=1, le=5)] | Literal["beginner", "intermediate",
                                                           "advanced"] = "intermediate"
    recent_score: float | None = Field(None, ge=0, le=1, description="last quiz score, 0-1")
    user_id: Identifier | None = None
    group_id: Identifier | None = Field(None, description=GROUP)
    model: Identifier = "small"
    max_tokens: int | None = Field(None, ge=16, le=4096)
    stream: bool = True

    def end_user(self) -> str | None:
        return self.user_id

    def end_group(self) -> str | None:
        return self.group_id

    def streamed(self) -> bool:
        return self.stream

    @field_validator("difficulty", mode="wrap")
    @classmethod
    def _difficulty(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> int | str:
        """One clear error for the field, not one per member of its union."""
        try:
            level: int | str = handler(value)
        except ValidationError:
            raise ValueError("difficulty must be between 1 and 5, or one of beginner, "
                             "intermediate, advanced") from None
        return level

    def profile(self) -> LearnerProfile:
        """`user_profile`, else a profile `persona` gives; a persona that is text (not a learning
        style's name) describes the learner, unless the profile has its own description."""
        persona = self.persona
        profile = self.user_profile or (persona if isinstance(persona, LearnerProfile) else None)
        if isinstance(persona, str):
            style = learning_style(persona)
            if profile is None and style is not None:
                return LearnerProfile(learning_style=style)
            profile = profile or LearnerProfile()
            if style is None and persona.strip() and profile.description is None:
                return profile.model_copy(update={"description": persona.strip()})
        return profile or LearnerProfile()


def _iso_date(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) is None:
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


# A date in a query (the usage report's `from` and `to`): only as YYYY-MM-DD.
IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    models: dict[str, str] = Field(description="per local model and the embedder: ok, or why not")


class ContentEvent(BaseModel):
    """An event of generate-content: content (text, or one JSON item of a structured type, with its
    `metadata.structure`), `fallback` where the service switched provider, and last `done` (usage,
    `cost_usd`, `provider_path`, the validated `data`) or `error` (`metadata.error`, `.status`)."""

    content: str
    type: ContentType | Literal["fallback", "done", "error"]
    metadata: dict[str, Any]


class GeneratedContent(BaseModel):
    """generate-content with `stream: false`: the whole content and the `done` event's metadata."""

    content: str
    type: ContentType
    metadata: dict[str, Any]
    data: dict[str, Any] | None = omitted("quiz, flashcards, practice_problems: the validated JSON")


class SeedEmbeddings(BaseModel):
    """The seed's embeddings answer; `embeddings` in the order of `texts`."""

    embeddings: list[list[float]]
    model: str
    dims: int
    count: int
    cache_hits: int = Field(description="texts answered from the cache")
    deduplicated: int = Field(description="texts answered by an identical text of the request")
    processing_time: float = Field(description="seconds")
