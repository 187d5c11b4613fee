"""Request parameters the service does not act on are refused by name, never silently dropped: a
parameter it does not know, or one it knows only at the values it can honour (`n: 1`, `store:
false`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from core.errors import InvalidRequest

# A parameter accepted only at these values, and what to do instead.
Fixed = Mapping[str, tuple[tuple[Any, ...], str]]


def refuse_unsupported(request: BaseModel, fixed: Fixed) -> None:
    """A 400 naming every parameter of `request` this service does not support: its unknown
    fields (the model keeps them as extras) and the `fixed` ones set to another value."""
    problems = [(name, f"{name} is not supported by this service")
                for name in request.model_extra or {}]
    problems += [(name, f"{name}: {why}") for name, (allowed, why) in fixed.items()
                 if not _among(getattr(request, name), allowed)]
    if problems:
        raise InvalidRequest("; ".join(why for _, why in problems)
                             + " (remove the parameter or send a supported value)",
                             param=problems[0][0])


def _among(value: Any, allowed: tuple[Any, ...]) -> bool:
    """`value in allowed`, without Python's True == 1 and False == 0."""
    return any(type(value) is type(choice) and value == choice for choice in allowed)


def fixed_schema(fixed: Fixed) -> Callable[[dict[str, Any]], None]:
    """A model's `json_schema_extra`: each fixed parameter documented as the values it takes, and
    no other parameter (the model keeps unknown ones only to name them in its 400), so that the
    published schema promises no more than the service accepts."""
    def document(schema: dict[str, Any]) -> None:
        schema["additionalProperties"] = False
        for name, (allowed, why) in fixed.items():
            values: list[Any] = []
            for value in allowed:
                if not any(json.dumps(value) == json.dumps(v) or (value == v and type(value)
                           in (int, float) and type(v) in (int, float)) for v in values):
                    values.append(value)
            schema["properties"][name] = {"enum": values, "description": why}
    return document
