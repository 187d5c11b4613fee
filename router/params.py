"""Request parameters the service does not act on are refused by name, never silently dropped: a
parameter it does not know, or one it knows only at the values it can honour (`n: 1`, `store:
false`)."""

from __future__ import annotations

from collections.abc import Mapping
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
