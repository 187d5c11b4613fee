"""Who the content is for: a learner profile and a difficulty, adapted to recent performance."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LearningStyle = Literal["visual", "verbal", "example_first", "step_by_step"]
Accommodation = Literal["short_sentences", "dyslexia_friendly", "extra_examples"]
DIFFICULTY_NAMES = {1: "beginner", 2: "beginner", 3: "intermediate", 4: "advanced", 5: "advanced"}
NAMED_DIFFICULTY = {"beginner": 1, "intermediate": 3, "advanced": 5}


class LearnerProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    learning_style: LearningStyle = "verbal"
    level: str | None = Field(None, max_length=80, description="e.g. 'grade 7', 'first-year university'")
    language: str = Field("English", max_length=40)
    interests: list[str] = Field(default_factory=list, max_length=10)
    accommodations: list[Accommodation] = Field(default_factory=list)

    def canonical(self) -> str:
        return self.model_dump_json()


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
