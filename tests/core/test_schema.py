"""Caller JSON schemas are bounded before any model sees them: what passes, and what is refused,
named by its path in the schema."""

from __future__ import annotations

import pickle
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from content.schemas import SCHEMAS, json_schema
from core.schema import (
    KEYWORDS,
    LIMITS,
    SchemaError,
    check_schema,
    grammar_safe,
    rewrite_subschemas,
    without_patterns,
)


def nested(levels: int) -> dict[str, Any]:
    """An object schema with `levels` levels of subschemas."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels - 1):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


def chain(length: int) -> dict[str, Any]:
    """$defs d0 -> d1 -> ... each an array of the next: `length` + 1 levels through $ref."""
    defs = {f"d{i}": {"type": "array", "items": {"$ref": f"#/$defs/d{i + 1}"}} for i in range(length)}
    return {"$defs": {**defs, f"d{length}": {"type": "string"}}, "$ref": "#/$defs/d0"}


def refused(schema: Any) -> SchemaError:
    with pytest.raises(SchemaError) as caught:
        check_schema(schema)
    return caught.value


@pytest.mark.parametrize("content_type", sorted(SCHEMAS))
def test_our_own_output_schemas_pass(content_type: str) -> None:
    check_schema(json_schema(content_type))


ACCEPTED = {
    "any-object": {},
    "typical": {"type": "object", "title": "Answer", "additionalProperties": False,
                "required": ["answer", "confidence"],
                "properties": {"answer": {"type": "string", "minLength": 1, "maxLength": 2000},
                               "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                               "tags": {"type": "array", "items": {"enum": ["a", "b"]},
                                        "maxItems": 5},
                               "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                               "code": {"type": "string", "pattern": "^[A-Z]{3}\\d\\]?$"},
                               "kind": {"const": "x", "description": "fixed"}}},
    "nullable-type-list": {"type": ["string", "null"]},
    "tuple": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
    "deepest-allowed": nested(LIMITS.max_depth),
    "longest-allowed-ref-chain": chain(LIMITS.max_depth - 1),
    "many-refs-to-one-def": {"$defs": {"leaf": {"type": "string"}}, "type": "object",
                             "properties": {f"p{i}": {"$ref": "#/$defs/leaf"} for i in range(64)}},
    "largest-counts": {"type": "array", "minItems": LIMITS.max_repeat,
                       "maxItems": LIMITS.max_repeat,
                       "items": {"type": "string", "minLength": LIMITS.max_repeat}},
    # Data is not schema: a property named like a keyword, a constant holding one.
    "keywords-as-data": {"type": "object", "properties": {"maxLength": {"type": "integer"}},
                         "default": {"maxLength": "many", "$ref": 3}},
}


@pytest.mark.parametrize("schema", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_schemas_within_bounds_pass(schema: dict[str, Any]) -> None:
    check_schema(schema)


REFUSED = [
    pytest.param(nested(300), "", "nested more than 32 levels deep as JSON", id="300-levels"),
    pytest.param(nested(LIMITS.max_depth + 1), "properties.inner." * 9 + "properties.inner",
                 "nested more than 10 levels", id="one-level-too-deep"),
    pytest.param(chain(LIMITS.max_depth), "$defs.d9.items", "counting through $ref",
                 id="too-deep-through-refs"),
    pytest.param({"type": "string", "minLength": 5000}, "minLength", "is 5000; at most 256",
                 id="huge-min-length"),
    pytest.param({"type": "array", "minItems": 1000}, "minItems", "at most 256", id="huge-min-items"),
    pytest.param({"type": "object", "properties": {"list": {"type": "array", "maxItems": 10**9}}},
                 "properties.list.maxItems", "at most 256", id="huge-max-items"),
    pytest.param({"type": "string", "maxLength": "many"}, "maxLength", "non-negative integer",
                 id="non-numeric-bound"),
    pytest.param({"type": "array", "minItems": True}, "minItems", "non-negative integer",
                 id="boolean-bound"),
    pytest.param({"type": "string", "minLength": -1}, "minLength", "non-negative", id="negative"),
    pytest.param({"type": "string", "minLength": 5, "maxLength": 2}, "minLength",
                 "more than maxLength", id="empty-range"),
    pytest.param({"type": "number", "minimum": "0"}, "minimum", "must be a number",
                 id="string-minimum"),
    pytest.param({"type": "strnig"}, "type", "must be one of string, number", id="unknown-type"),
    pytest.param({"type": ["string", {"x": 1}]}, "type", "must be one of", id="odd-type-list"),
    pytest.param({"type": "object", "patternProperties": {"^x": {}}}, "patternProperties",
                 "unsupported keyword; supported: $comment", id="unsupported-keyword"),
    pytest.param({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}, "$defs.a.$ref",
                 "$ref cycle (a -> a)", id="self-reference"),
    pytest.param({"$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/b"}},
                            "b": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}},
                  "$ref": "#/$defs/a"}, "$defs.b.anyOf.0.$ref", "$ref cycle (a -> b -> a)",
                 id="ref-cycle"),
    pytest.param({"$ref": "#"}, "$ref", "only local references", id="root-reference"),
    pytest.param({"$ref": "https://example.com/s.json"}, "$ref", "only local", id="remote-ref"),
    pytest.param({"$ref": "#/$defs/missing"}, "$ref", "not defined", id="undefined-ref"),
    pytest.param({"properties": {"a": {"$defs": {}}}}, "properties.a.$defs", "only supported at "
                 "the root", id="nested-defs"),
    pytest.param({"enum": list(range(300))}, "enum", "300 values; at most 256", id="huge-enum"),
    pytest.param({"enum": []}, "enum", "non-empty", id="empty-enum"),
    pytest.param({"anyOf": [{"type": "string"}] * 17}, "anyOf", "17 schemas; at most 16",
                 id="many-branches"),
    pytest.param({"type": "object", "properties": {f"p{i}": {} for i in range(65)}}, "properties",
                 "65 properties; at most 64", id="many-properties"),
    pytest.param({"type": "object", "properties": {f"p{i}": {"description": "x" * 400}
                                                   for i in range(50)}},
                 "", "bytes as JSON; at most 16384", id="huge-schema"),
    pytest.param({"type": "string", "pattern": "^(a{0,999})$"}, "pattern", "repeats {0,999}; at most 256",
                 id="pattern-repetition"),
    pytest.param({"type": "string", "pattern": "^(a$"}, "pattern", "not a valid regular expression",
                 id="bad-pattern"),
    # Python reads `]` as itself; llama.cpp's converter loops forever on it.
    pytest.param({"type": "string", "pattern": "^a]$"}, "pattern", "must be escaped",
                 id="pattern-unescaped-bracket"),
    pytest.param({"type": "string", "pattern": "^x{2$"}, "pattern", "must be escaped",
                 id="pattern-unclosed-quantifier"),
    pytest.param({"type": "string", "pattern": "^[a-z&&[^b]]$"}, "pattern", "may not nest",
                 id="pattern-set-operation"),
    pytest.param({"items": "string"}, "items", "must be a schema", id="items-not-a-schema"),
    pytest.param({"type": "number", "maximum": float("inf")}, "", "no NaN or Infinity",
                 id="infinity"),
    pytest.param([{"type": "string"}], "", "must be a JSON object", id="not-an-object"),
]


@pytest.mark.parametrize(("schema", "where", "says"), REFUSED)
def test_what_is_not_allowed_is_named_by_its_path(schema: Any, where: str, says: str) -> None:
    error = refused(schema)
    assert error.where == where
    assert says in error.problem
    assert str(error) == (f"{where}: {error.problem}" if where else error.problem)


def test_nesting_far_beyond_the_recursion_limit_is_refused_not_crashed() -> None:
    deep: Any = {}
    for _ in range(100_000):
        deep = {"items": deep}
    assert "levels deep" in str(refused(deep))


def test_the_error_crosses_processes_whole() -> None:
    error = refused({"type": "string", "minLength": 5000})
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.where, copy.problem) == (SchemaError, error.where, error.problem)


def test_rewrite_reaches_every_subschema_and_no_data() -> None:
    schema = {"type": "object", "const": {"type": "x"}, "properties": {
        "a": {"type": "x", "items": {"type": "x"}}, "type": {"anyOf": [{"type": "x"}]}},
        "$defs": {"d": {"type": "x", "enum": [{"type": "x"}]}}}

    def mark(node: dict[str, Any]) -> dict[str, Any]:
        return {**node, "type": "seen"}

    assert rewrite_subschemas(schema, mark) == {
        "type": "seen", "const": {"type": "x"}, "properties": {
            "a": {"type": "seen", "items": {"type": "seen"}},
            "type": {"type": "seen", "anyOf": [{"type": "seen"}]}},
        "$defs": {"d": {"type": "seen", "enum": [{"type": "x"}]}}}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.sampled_from(["string", "object", "#/$defs/a", "^a{3}$"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from([*sorted(KEYWORDS), "a", "b"]), inner, max_size=4),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_is_either_accepted_or_refused_with_a_schema_error(value: Any) -> None:
    try:
        check_schema(value)
    except SchemaError as error:
        assert error.problem


def test_a_grammar_safe_schema_has_no_patterns_and_no_long_max_lengths() -> None:
    schema = {"type": "object", "properties": {
        "s": {"type": "string", "pattern": "^(a?){200}a{200}$", "maxLength": 10**12},
        "t": {"type": "string", "maxLength": 20},
        "u": {"type": "array", "items": {"type": "string", "pattern": "^x$"}},
        "v": {"enum": [{"pattern": "data, not a keyword"}]}},
        "$defs": {"d": {"anyOf": [{"type": "string", "pattern": "b+"}]}}}
    assert grammar_safe(schema, max_length=300) == {"type": "object", "properties": {
        "s": {"type": "string"},
        "t": {"type": "string", "maxLength": 20},
        "u": {"type": "array", "items": {"type": "string"}},
        "v": {"enum": [{"pattern": "data, not a keyword"}]}},
        "$defs": {"d": {"anyOf": [{"type": "string"}]}}}
    assert without_patterns({"pattern": "a", "maxLength": 10**12}) == {"maxLength": 10**12}


# Patterns whose enforcement a grammar sampler cannot bound: a repeated part that can match nothing
# (one token of the first took 102.8 s on llama.cpp before it was refused), or counts that multiply.
COSTLY_PATTERNS = ["^(a?){200}a{200}$", "^(a*)+$", "^(a|b?)+$", "^(?:x?y?){3}z$",
                   "^((a{200}){200}){200}$"]
BOUNDED_PATTERNS = ["^[a-z]{3}-[0-9]{4}$", "^(ab|a)+$", "^(?:[A-Z][a-z]+ ?){1,5}$", "^.{0,100}$",
                    "^(a?)?b$"]


@pytest.mark.parametrize("pattern", COSTLY_PATTERNS)
def test_a_pattern_whose_cost_cannot_be_bounded_is_refused(pattern: str) -> None:
    started = time.monotonic()
    with pytest.raises(SchemaError, match=r"^properties\.s\.pattern: (repeats a part that can "
                                          r"match nothing|spells out more than 1024)"):
        check_schema({"type": "object", "properties": {"s": {"type": "string",
                                                               "pattern": pattern}}})
    assert time.monotonic() - started < 0.1


@pytest.mark.parametrize("pattern", BOUNDED_PATTERNS)
def test_patterns_of_bounded_cost_pass(pattern: str) -> None:
    check_schema({"type": "string", "pattern": pattern})
