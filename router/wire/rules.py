"""The rules every request model of the API follows (OpenAI's and the seed's: router/wire/openai.py,
router/wire/learnx.py, router/wire/completions.py, router/wire/responses.py), and the one helper
response models use to leave a field out.

Requests (`Wire`): a field this service does not act on is a 400 naming it, never silently dropped,
and so is a value its model's `FIXED` table does not allow (router/wire/params.py); the only
exceptions are the few parameters OpenAI itself treats as hints (router/wire/openai.py:
`OpenAIHints`), accepted with the values listed there and ignored. Responses: None is sent as null, as
OpenAI's schemas require of many fields; fields declared `omitted()` (our extensions, and optional
fields OpenAI's schema does not let be null) are left out while None. Dump response models without
`exclude_none`."""
from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from core.errors import InvalidRequest
from router.wire.params import Fixed, check_fixed, document_fixed

# Control characters (C0, DEL, C1) and lone surrogates: never in an id. Text may hold tab, newline
# and carriage return, nothing else of C0. A NUL or a lone surrogate cannot even be stored (PostgreSQL
# refuses NUL in text; neither database can encode a lone surrogate as UTF-8).
_NOT_IN_IDS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def forbidden_character(value: str, pattern: re.Pattern[str] = _NOT_IN_IDS) -> str | None:
    """`U+0000 (a control character) at position 3`: the first character `pattern` forbids, or
    None."""
    found = pattern.search(value)
    if not found:
        return None
    code = ord(found.group())
    kind = "an unpaired UTF-16 surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
    return f"U+{code:04X} ({kind}) at position {found.start()}"


def _identifier(value: str) -> str:
    problem = forbidden_character(value)
    if problem:
        raise ValueError(f"must not contain control characters or unpaired surrogates "
                         f"(found {problem})")
    return value


# What the two rules allow, as JSON Schema patterns (the OpenAPI document states them).
ID_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
TEXT_PATTERN = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]*$"

# Ids and names: user ids (budgets, limits, the ledger), model names.
Identifier = Annotated[str, Field(min_length=1, max_length=256,
                                  json_schema_extra={"pattern": ID_PATTERN}),
                       AfterValidator(_identifier)]
GROUP = ("Our extension: the end user's group (a class) within the key's tenant. The request spends "
         "the group's budget and the learner's share of it, besides the tenant's and the user's "
         "(docs/api.md: Budget levels); the ledger records it.")


def _text_problem(value: Any, path: str) -> str | None:
    """`path has U+0000 at position 3` for the first control character in any text of `value`
    (strings, dict keys and values, lists, models; a Wire model checks its own fields)."""
    if isinstance(value, str):
        problem = forbidden_character(value, _NOT_IN_TEXT)
        return f"{path} has {problem}" if problem else None
    if isinstance(value, Wire):
        return None
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, dict):
        children = [(f"{path}.{key}", item) for key, item in value.items()]
        children += [(f"{path} (a key)", key) for key in value]
    elif isinstance(value, list):
        children = [(f"{path}.{index}", item) for index, item in enumerate(value)]
    else:
        return None
    for child_path, child in children:
        problem = _text_problem(child, child_path)
        if problem:
            return problem
    return None


class Wire(BaseModel):
    # Every field is typed and acted on: an unknown one (logit_bias, functions, ...) is a 400 naming
    # it (router/http/api.py words it), since a silently dropped parameter is an answer to another request.
    # Strict: JSON's types as the OpenAPI document states them ("3" is no integer, 0 no boolean).
    model_config = ConfigDict(extra="forbid", strict=True)
    # Parameters accepted only at some values (router/wire/params.py): refused by name otherwise.
    FIXED: ClassVar[Fixed] = {}

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.FIXED:
            document_fixed(cls.FIXED, handler.resolve_ref_schema(schema))
        return schema

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        """JSON Schema's integer: 3.0 is 3 (a strict int field would refuse it)."""
        if not isinstance(data, dict):
            return data
        return {key: int(value) if isinstance(value, float) and value.is_integer() else value
                for key, value in data.items()}

    @field_validator("*")
    @classmethod
    def _valid_value(cls, value: Any, info: ValidationInfo) -> Any:
        """A value its model's FIXED table allows (one validator for both rules: it runs for
        every field of every request). Text may hold tab, newline and carriage return, no other
        control character and no unpaired surrogate; the error names the field (and the item
        within it)."""
        if cls.FIXED:
            check_fixed(cls.FIXED, info.field_name or "", value)
        problem = _text_problem(cls._checked_text(info.field_name or "", value),
                                info.field_name or "")
        if problem:
            raise ValueError(f"not valid text: {problem}; send well-formed UTF-8 without control "
                             "characters other than tab and newline")
        return value

    @classmethod
    def _checked_text(cls, field: str, value: Any) -> Any:
        """What of a field's value the text rule applies to: all of it, unless a model says."""
        return value


def _is_none(value: Any) -> bool:
    return value is None


def omitted(description: str | None = None) -> Any:
    """A response field that is left out of the body while None (see the module's docstring)."""
    return Field(None, exclude_if=_is_none, description=description)


_HEADER_ID = re.compile(r"[\x21-\x7e]{1,128}")


def header_id(name: str, value: str | None) -> str | None:
    """A caller's id header (X-Request-Id, Idempotency-Key): 1-128 visible ASCII characters; an
    absent or empty header is None."""
    if not value:
        return None
    if _HEADER_ID.fullmatch(value) is None:
        problem = forbidden_character(value, re.compile(r"[^\x21-\x7e]")) or "over 128 characters"
        raise InvalidRequest(f"the {name} header must be 1-128 visible ASCII characters "
                             f"(found {problem})", param=name)
    return value
