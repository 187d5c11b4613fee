"""router/wire/params.py: a request model's FIXED table is the one place that says which values of a
parameter the service honours; Wire refuses any other value while validating, naming the parameter
and what to do instead, and the model's schema lists exactly the values the table allows."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from router.http.api import validation_message
from router.wire.completions import CompletionRequest
from router.wire.responses import ResponsesRequest

COMPLETION = {"model": "m", "prompt": "Once"}


def refusal(body: dict[str, Any]) -> list[Any]:
    with pytest.raises(ValidationError) as raised:
        CompletionRequest.model_validate({**COMPLETION, **body})
    return raised.value.errors()


def test_a_value_outside_the_table_is_refused_naming_the_parameter_and_what_to_do() -> None:
    (error,) = refusal({"n": 2})
    assert (error["type"], error["loc"]) == ("unsupported_value", ("n",))
    assert validation_message([error]) == ("n: only 1: send one request per completion (remove "
                                           "the parameter or send a supported value)")


def test_every_refused_parameter_is_named() -> None:
    errors = refusal({"echo": True, "best_of": 2, "logit_bias": {"1": 2}})
    assert [e["loc"] for e in errors] == [("echo",), ("best_of",), ("logit_bias",)]


@pytest.mark.parametrize("body", [{"echo": 0}, {"n": True}, {"n": 1.5}])
def test_json_types_count_true_is_not_one(body: dict[str, Any]) -> None:
    assert refusal(body)[0]["loc"] == tuple(body)


def test_the_values_the_table_allows_are_accepted_as_sent() -> None:
    request = CompletionRequest.model_validate({**COMPLETION, "n": 1, "echo": False,
                                                "frequency_penalty": 0.0, "logit_bias": {}})
    assert (request.n, request.echo, request.logit_bias) == (1, False, {})


def test_an_unknown_parameter_is_refused_as_on_every_route() -> None:
    with pytest.raises(ValidationError) as raised:
        ResponsesRequest.model_validate({"model": "m", "input": "Hi", "conversation": "c_1"})
    (error,) = raised.value.errors()
    assert (error["type"], error["loc"]) == ("extra_forbidden", ("conversation",))


@pytest.mark.parametrize("model", [CompletionRequest, ResponsesRequest])
def test_the_schema_lists_the_values_of_the_table(model: Any) -> None:
    schema = model.model_json_schema()
    assert schema["additionalProperties"] is False
    for name, (allowed, why) in model.FIXED.items():
        assert schema["properties"][name]["description"] == why
        assert all(value in schema["properties"][name]["enum"] for value in allowed)
