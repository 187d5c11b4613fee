"""Output contracts of the structured content types, published as JSON Schema and validated."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Text = Annotated[str, Field(min_length=1, max_length=300)]


class OutputModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuizQuestion(OutputModel):
    question: Text
    options: Annotated[list[Text], Field(min_length=4, max_length=4)]
    answer_index: int = Field(ge=0, le=3)
    rationale: Text


class Quiz(OutputModel):
    questions: Annotated[list[QuizQuestion], Field(min_length=1, max_length=5)]

    @model_validator(mode="after")
    def _distinct_options(self) -> Quiz:
        for number, q in enumerate(self.questions, 1):
            if len({o.strip().lower() for o in q.options}) < 4:
                raise ValueError(f"question {number} repeats an option; the 4 options must differ")
        return self


class Flashcard(OutputModel):
    front: Text
    back: Text


class Flashcards(OutputModel):
    cards: Annotated[list[Flashcard], Field(min_length=1, max_length=10)]


class PracticeProblem(OutputModel):
    problem: Text
    solution_steps: Annotated[list[Text], Field(min_length=1, max_length=6)]
    answer: Text


class PracticeProblems(OutputModel):
    problems: Annotated[list[PracticeProblem], Field(min_length=1, max_length=3)]


SCHEMAS: dict[str, type[OutputModel]] = {
    "quiz": Quiz, "flashcards": Flashcards, "practice_problems": PracticeProblems}


def json_schema(content_type: str) -> dict[str, Any]:
    return SCHEMAS[content_type].model_json_schema()


def validate(content_type: str, text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the validated data, None) or (None, what is wrong, phrased for the model to fix)."""
    try:
        return SCHEMAS[content_type].model_validate_json(text).model_dump(), None
    except ValidationError as error:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"
                    for e in error.errors()[:5]]
        return None, "; ".join(problems)
