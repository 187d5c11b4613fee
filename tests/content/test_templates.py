"""Prompt compilation per content type x learning style x difficulty."""

from __future__ import annotations

import json
import typing

import pytest

from content.profile import LearnerProfile, adapt, difficulty_level
from content.templates import TASKS, ContentType, compile_messages, is_structured, repair_messages

TYPES = typing.get_args(ContentType)
STYLES = ("visual", "verbal", "example_first", "step_by_step")
SAYS = {"visual": "visually", "verbal": "verbal", "example_first": "examples",
        "step_by_step": "step-by-step"}


@pytest.mark.parametrize("content_type", TYPES)
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("level", [1, 3, 5])
def test_prompt_says_what_the_profile_asks_for(content_type: str, style: str, level: int) -> None:
    profile = LearnerProfile(learning_style=style, level="grade 7", language="Spanish",
                             interests=["football"], accommodations=["short_sentences"])
    system, user = compile_messages(content_type, "Fractions are parts of a whole.", profile, level)
    assert SAYS[style] in system["content"]
    assert f"Difficulty {level}/5" in system["content"]
    assert "Spanish" in system["content"] and "grade 7" in system["content"]
    assert "football" in system["content"] and "short sentences" in system["content"]
    assert user["content"].startswith(TASKS[content_type])
    assert user["content"].endswith("Fractions are parts of a whole.")
    if is_structured(content_type):
        schema = json.loads(user["content"].split("JSON Schema: ")[1].split("\n")[0])
        assert schema["type"] == "object"


def test_repair_feeds_the_problems_back() -> None:
    messages = compile_messages("quiz", "x", LearnerProfile(), 3)
    repaired = repair_messages(messages, "{bad", "questions: Field required")
    assert repaired[-2] == {"role": "assistant", "content": "{bad"}
    assert "questions: Field required" in repaired[-1]["content"]


def test_difficulty_names_and_bounds() -> None:
    assert [difficulty_level(n) for n in ("beginner", "intermediate", "advanced")] == [1, 3, 5]
    with pytest.raises(ValueError, match="between 1 and 5"):
        difficulty_level(6)
    with pytest.raises(ValueError, match="one of"):
        difficulty_level("expert")


def test_recent_performance_moves_the_difficulty() -> None:
    assert adapt(3, None) == (3, "as requested")
    assert adapt(3, 0.9)[0] == 4
    assert adapt(3, 0.3)[0] == 2
    assert adapt(3, 0.7)[0] == 3
    assert adapt(5, 1.0)[0] == 5 and adapt(1, 0.0)[0] == 1
