"""Parameters a request model accepts only at the values this service can honour (`n: 1`, `store:
false`): one declarative table per model, its `FIXED` (router/wire/rules.py: Wire checks it while
validating, as it refuses every parameter it does not know, so both are a 400 naming the
parameter before any work starts). The same table documents the values in the model's schema."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic_core import PydanticCustomError

# A parameter accepted only at these values, and what to do instead.
Fixed = Mapping[str, tuple[tuple[Any, ...], str]]


def check_fixed(fixed: Fixed, name: str, value: Any) -> None:
    """Refuse `value` for `name` unless the table allows it (names not in the table pass)."""
    if name in fixed and not _among(value, fixed[name][0]):
        raise PydanticCustomError(
            "unsupported_value", "{why} (remove the parameter or send a supported value)",
            {"why": fixed[name][1]})


def _among(value: Any, allowed: tuple[Any, ...]) -> bool:
    """`value in allowed`, without Python's True == 1 and False == 0."""
    return any(type(value) is type(choice) and value == choice for choice in allowed)


def document_fixed(fixed: Fixed, schema: dict[str, Any]) -> None:
    """Each fixed parameter of a model's JSON schema documented as the values it takes, so that
    the published schema promises no more than the service accepts."""
    for name, (allowed, why) in fixed.items():
        values: list[Any] = []
        for value in allowed:
            if not any(json.dumps(value) == json.dumps(v) or (value == v and type(value)
                       in (int, float) and type(v) in (int, float)) for v in values):
                values.append(value)
        schema["properties"][name] = {"enum": values, "description": why}
