"""Output contracts of structured content."""

from __future__ import annotations

import json

from content.schemas import json_schema, validate

QUIZ = {"questions": [{"question": "1/2 + 1/4?", "options": ["3/4", "2/6", "1/8", "2/4"],
                       "answer_index": 0, "rationale": "Common denominator 4."}]}


def test_valid_quiz_passes() -> None:
    data, problems = validate("quiz", json.dumps(QUIZ))
    assert problems is None and data == QUIZ


def test_problems_name_the_field() -> None:
    bad = {"questions": [{**QUIZ["questions"][0], "answer_index": 7}]}
    data, problems = validate("quiz", json.dumps(bad))
    assert data is None and "questions.0.answer_index" in problems


def test_repeated_options_are_rejected() -> None:
    bad = {"questions": [{**QUIZ["questions"][0], "options": ["a", "a", "b", "c"]}]}
    assert "repeats an option" in validate("quiz", json.dumps(bad))[1]


def test_not_json_is_a_problem_not_a_crash() -> None:
    data, problems = validate("flashcards", "Sure! Here are cards:")
    assert data is None and problems


def test_published_schemas_are_strict_objects() -> None:
    for content_type in ("quiz", "flashcards", "practice_problems"):
        schema = json_schema(content_type)
        assert schema["type"] == "object" and schema["additionalProperties"] is False
