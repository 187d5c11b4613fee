"""Who the content is for: a learner profile and a difficulty, adapted to recent performance."""

from __future__ import annotations

from typing import Annotated, Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field

LearningStyle = Literal["visual", "verbal", "example_first", "step_by_step"]
# A sentence or two about the learner, as the Node app holds it ("a visual learner who loves
# football"). Learner-supplied text: it goes where user text goes, never into the system message.
PersonaText = Annotated[str, Field(max_length=1000)]
Accommodation = Literal["short_sentences", "dyslexia_friendly", "extra_examples"]
DEFAULT_LANGUAGE = "English"
DIFFICULTY_NAMES = {1: "beginner", 2: "beginner", 3: "intermediate", 4: "advanced", 5: "advanced"}
NAMED_DIFFICULTY = {"beginner": 1, "intermediate": 3, "advanced": 5}


class LearnerProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    learning_style: LearningStyle = "verbal"
    # What the learner controls (bounded; placed in the user message, content/templates.py):
    level: str | None = Field(None, max_length=80, description="e.g. 'grade 7', 'first-year university'")
    language: str = Field(DEFAULT_LANGUAGE, min_length=1, max_length=40)
    interests: list[Annotated[str, Field(max_length=60)]] = Field(default_factory=list, max_length=10)
    description: PersonaText | None = Field(None, description="the learner in a few sentences")
    accommodations: list[Accommodation] = Field(default_factory=list)

    def canonical(self) -> str:
        return self.model_dump_json()


def learning_style(text: str) -> LearningStyle | None:
    """The learning style `text` names ("visual", "Step by step", "example-first"), or None."""
    word = "_".join(text.strip().lower().replace("-", " ").split())
    return cast(LearningStyle, word) if word in get_args(LearningStyle) else None


def difficulty_level(value: int | str) -> int:
    """1-5 from a number or a name (beginner=1, intermediate=3, advanced=5)."""
    if isinstance(value, str):
        if value not in NAMED_DIFFICULTY:
            raise ValueError(f"difficulty must be 1-5 or one of {', '.join(NAMED_DIFFICULTY)}")
        return NAMED_DIFFICULTY[value]
    if not 1 <= value <= 5:
        raise ValueError("difficulty must be between 1 and 5")
    return value


def adapt(level: int, recent_score: float | None) -> tuple[int, str]:
    """Move the difficulty with the learner's last score (0-1): up after >= 0.85, down below 0.5."""
    if recent_score is None:
        return level, "as requested"
    if recent_score >= 0.85 and level < 5:
        return level + 1, f"raised from {level}: recent score {recent_score:.0%}"
    if recent_score < 0.5 and level > 1:
        return level - 1, f"lowered from {level}: recent score {recent_score:.0%}"
    return level, f"kept: recent score {recent_score:.0%}"
