"""Caller JSON schemas, bounded before any model sees them.

A local model turns a schema into a grammar: one rule per subschema, every repetition count
(`minLength`, `minItems`, `maxItems`) expanded into that many copies of a rule, every optional
property into a branch. An unbounded schema therefore becomes a grammar that takes minutes to
build, that llama.cpp refuses (crashing its process), or that overflows the converter's recursion.
`check_schema` admits what every layer can handle: JSON Schema's structural keywords with values of
the right type, bounded sizes and counts, `$ref` only to the root's `$defs` and never in a cycle.
It raises SchemaError naming the first thing not allowed by its path (`properties.answer.minLength`).

Pure: the router checks caller schemas with it (structured output, tool parameters) and the
engines check again before building a grammar."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
DEFS_PREFIX = "#/$defs/"
_ANNOTATIONS = {"title": str, "description": str, "$comment": str, "$schema": str, "$id": str,
                "format": str, "deprecated": bool, "readOnly": bool, "writeOnly": bool}
_ANY_VALUE = {"default", "examples", "const"}
_NUMBERS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
_COUNTS = {"minLength", "minItems", "maxItems"}  # each repeats a grammar rule that many times
_BRANCHES = {"anyOf", "oneOf", "allOf", "prefixItems"}
_ESCAPE = re.compile(r"\\.")
# What a pattern's brackets may stand for: an escape, a character class, a {m,n} quantifier.
_PATTERN_PARTS = re.compile(r"\\.|\[(?:\\.|[^\]\\])*\]|\{\d*(?:,\d*)?\}")
_SET_OPERATORS = ("[", "&&", "--", "~~", "||")  # set syntax Python warns about inside a class
_DATA_DEPTH = 32  # nesting of any JSON value in the schema (enum values, defaults)


@dataclass(frozen=True)
class SchemaLimits:
    max_bytes: int = 16_384  # the schema as compact JSON
    max_depth: int = 10  # subschemas within subschemas, following $refs
    max_subschemas: int = 256
    max_properties: int = 64  # per object
    max_branches: int = 16  # anyOf / oneOf / allOf / prefixItems / a list of types
    max_enum: int = 256
    max_repeat: int = 256  # minLength, minItems, maxItems, {m,n} in a pattern
    max_pattern: int = 256  # characters


LIMITS = SchemaLimits()


class SchemaError(ValueError):
    """What a schema may not contain. `where` is the path of the offending keyword ('' = root)."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.where, self.problem))


def check_schema(schema: Any, limits: SchemaLimits = LIMITS) -> None:
    """Raise SchemaError unless `schema` is within `limits` and uses only supported keywords."""
    _check_data_depth(schema)
    try:
        size = len(json.dumps(schema, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError):
        raise SchemaError("", "the schema must be JSON (no NaN or Infinity)") from None
    if size > limits.max_bytes:
        raise SchemaError("", f"the schema is {size} bytes as JSON; at most {limits.max_bytes} "
                              "are allowed")
    if not isinstance(schema, dict):
        raise SchemaError("", "a schema must be a JSON object")
    _Walk(schema, limits).root()


def _check_data_depth(value: Any) -> None:
    """Iteratively, so that no nesting can exhaust the interpreter's recursion."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > _DATA_DEPTH:
            raise SchemaError("", f"the schema is nested more than {_DATA_DEPTH} levels deep as JSON")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        pending.extend((child, depth + 1) for child in children)


def _join(path: str, *parts: object) -> str:
    return ".".join([path, *map(str, parts)] if path else map(str, parts))


class _Walk:
    def __init__(self, root: dict[str, Any], limits: SchemaLimits):
        self._root = root
        self._limits = limits
        self._defs: dict[str, Any] = {}
        self._heights: dict[str, int] = {}  # of each $defs entry, once checked
        self._resolving: list[str] = []  # $defs entries being checked, to catch cycles
        self._offset = 0  # the depth of the $ref sites that led to the entry being checked
        self._subschemas = 0

    def root(self) -> None:
        defs = self._root.get("$defs", {})
        if not isinstance(defs, dict):
            raise SchemaError("$defs", "must be an object of schemas")
        self._defs = defs
        for name in defs:
            self._def_height(name, "$defs")
        self._schema(self._root, "", 1)

    def _schema(self, node: Any, path: str, depth: int) -> int:
        """Check one subschema at nesting `depth`; return its height (levels, itself included)."""
        if not isinstance(node, dict):
            raise SchemaError(path, "must be a schema (a JSON object)")
        limits = self._limits
        if self._offset + depth > limits.max_depth:
            raise SchemaError(path, f"subschemas are nested more than {limits.max_depth} levels "
                                    "deep (counting through $ref)")
        self._subschemas += 1
        if self._subschemas > limits.max_subschemas:
            raise SchemaError(path, f"the schema has more than {limits.max_subschemas} subschemas")
        height = 1
        for keyword, value in node.items():
            below = self._keyword(keyword, value, _join(path, keyword), depth, path == "")
            height = max(height, 1 + below)
        self._check_ranges(node, path)
        return height

    def _keyword(self, keyword: str, value: Any, path: str, depth: int, at_root: bool) -> int:
        """Check one keyword's value; return the height of the subschemas under it."""
        if keyword in ("properties", "$defs"):
            if keyword == "$defs":
                if not at_root:
                    raise SchemaError(path, "$defs is only supported at the root of the schema")
                return 0  # checked once by root(), reached through $ref
            return self._properties(value, path, depth)
        if keyword in ("items", "additionalProperties"):
            if keyword == "additionalProperties" and isinstance(value, bool):
                return 0
            return self._schema(value, path, depth + 1)
        if keyword in _BRANCHES:
            if not isinstance(value, list) or not value:
                raise SchemaError(path, "must be a non-empty list of schemas")
            self._at_most(len(value), self._limits.max_branches, path, "schemas")
            return max(self._schema(v, _join(path, i), depth + 1) for i, v in enumerate(value))
        if keyword == "$ref":
            return self._ref(value, path, depth)
        self._leaf(keyword, value, path)
        return 0

    def _properties(self, value: Any, path: str, depth: int) -> int:
        if not isinstance(value, dict):
            raise SchemaError(path, "must be an object of schemas")
        self._at_most(len(value), self._limits.max_properties, path, "properties")
        return max((self._schema(v, _join(path, k), depth + 1) for k, v in value.items()), default=0)

    def _ref(self, value: Any, path: str, depth: int) -> int:
        if not isinstance(value, str) or not value.startswith(DEFS_PREFIX):
            raise SchemaError(path, f"only local references of the form '{DEFS_PREFIX}<name>' "
                                    "are supported")
        height = self._def_height(value[len(DEFS_PREFIX):], path, depth - 1)
        if self._offset + depth - 1 + height > self._limits.max_depth:
            raise SchemaError(path, f"subschemas are nested more than {self._limits.max_depth} "
                                    "levels deep (counting through $ref)")
        return height - 1  # the referenced schema takes the place of this one

    def _def_height(self, name: str, path: str, offset: int = 0) -> int:
        if name not in self._defs:
            raise SchemaError(path, f"'{DEFS_PREFIX}{name}' is not defined in the root's $defs")
        if name in self._resolving:
            cycle = " -> ".join([*self._resolving[self._resolving.index(name):], name])
            raise SchemaError(path, f"$ref cycle ({cycle}): recursive schemas are not supported")
        if name not in self._heights:
            self._resolving.append(name)
            self._offset += offset
            try:
                self._heights[name] = self._schema(self._defs[name], _join("$defs", name), 1)
            finally:
                self._offset -= offset
                self._resolving.pop()
        return self._heights[name]

    def _leaf(self, keyword: str, value: Any, path: str) -> None:
        if keyword == "type":
            self._type(value, path)
        elif keyword == "enum":
            if not isinstance(value, list) or not value:
                raise SchemaError(path, "must be a non-empty list of values")
            self._at_most(len(value), self._limits.max_enum, path, "values")
        elif keyword == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SchemaError(path, "must be a list of property names")
        elif keyword in _COUNTS:
            self._count(value, path, self._limits.max_repeat)
        elif keyword == "maxLength":
            self._count(value, path, None)  # the engines enforce what they can (any bound is safe)
        elif keyword in _NUMBERS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SchemaError(path, "must be a number")
        elif keyword == "pattern":
            self._pattern(value, path)
        elif keyword in _ANNOTATIONS:
            if not isinstance(value, _ANNOTATIONS[keyword]):
                raise SchemaError(path, f"must be a {_ANNOTATIONS[keyword].__name__}")
        elif keyword not in _ANY_VALUE:
            raise SchemaError(path, "unsupported keyword; supported: " + ", ".join(sorted(KEYWORDS)))

    def _type(self, value: Any, path: str) -> None:
        names = value if isinstance(value, list) else [value]
        if not names or not all(isinstance(n, str) and n in TYPES for n in names) \
                or len(set(names)) < len(names):
            raise SchemaError(path, "must be one of " + ", ".join(TYPES) + " or a list of them")
        self._at_most(len(names), self._limits.max_branches, path, "types")

    def _count(self, value: Any, path: str, limit: int | None) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SchemaError(path, "must be a non-negative integer")
        if limit is not None and value > limit:
            raise SchemaError(path, f"is {value}; at most {limit} is allowed")

    def _pattern(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise SchemaError(path, "must be a string (a regular expression)")
        self._at_most(len(value), self._limits.max_pattern, path, "characters")
        outside = _PATTERN_PARTS.sub("", value)
        for part in _PATTERN_PARTS.findall(value):
            if part[0] == "[" and any(op in _ESCAPE.sub("", part[1:-1]) for op in _SET_OPERATORS):
                raise SchemaError(path, "character classes may not nest or combine sets "
                                        "([, &&, --, ~~, ||)")
            if part[0] == "{" and max(map(int, re.findall(r"\d+", part)), default=0) \
                    > self._limits.max_repeat:
                raise SchemaError(path, f"repeats {part}; at most {self._limits.max_repeat} "
                                        "times is allowed")
        if any(c in outside for c in "[]{}"):
            # Valid for Python, a syntax error for the ECMA-262 regexes of JSON Schema, and a
            # pattern that llama.cpp's grammar converter loops on forever.
            raise SchemaError(path, "a literal [, ], { or } must be escaped with a backslash")
        try:
            parsed = re._parser.parse(value)  # type: ignore[attr-defined]
        except re.error as error:
            raise SchemaError(path, f"is not a valid regular expression ({error})") from None
        _check_pattern_cost(parsed, path)

    def _check_ranges(self, node: dict[str, Any], path: str) -> None:
        for low, high in (("minLength", "maxLength"), ("minItems", "maxItems")):
            if low in node and high in node and node[low] > node[high]:
                raise SchemaError(_join(path, low), f"is more than {high}")

    def _at_most(self, count: int, limit: int, path: str, what: str) -> None:
        if count > limit:
            raise SchemaError(path, f"has {count} {what}; at most {limit} are allowed")


MAX_PATTERN_POSITIONS = 1024  # characters a pattern spells out once its repetitions are expanded


def _check_pattern_cost(parsed: Any, path: str) -> None:
    """A grammar sampler follows every way the text so far can match: a repeated part that can
    match nothing (`(a?){200}`, `(a*)+`) makes those ways multiply, and each token then costs seconds
    to minutes (measured: `^(a?){200}a{200}$`, 102.8 s for one token); nested counts multiply the
    grammar's size. Both are refused before any model sees the pattern."""
    if _positions(parsed, path) > MAX_PATTERN_POSITIONS:
        raise SchemaError(path, f"spells out more than {MAX_PATTERN_POSITIONS} characters once its "
                                "repetitions are expanded: use smaller or fewer nested counts")


def _positions(items: Any, path: str) -> int:
    total = 0
    for op, arg in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, body = arg
            if high > 1 and _nullable(body):
                raise SchemaError(path, "repeats a part that can match nothing (like (a?){n} or "
                                        "(a*)+), which makes enforcing it cost minutes per token: "
                                        "repeat a part that always matches a character")
            total += _positions(body, path) * (high if high != re._constants.MAXREPEAT  # type: ignore[attr-defined]
                                              else low + 1)
        elif name == "SUBPATTERN":
            total += _positions(arg[-1], path)
        elif name == "BRANCH":
            total += sum(_positions(branch, path) for branch in arg[1])
        elif name in ("ASSERT", "ASSERT_NOT"):
            total += _positions(arg[1], path)
        elif name != "AT":
            total += 1
        if total > MAX_PATTERN_POSITIONS:
            return total
    return total


def _nullable(items: Any) -> bool:
    """Whether the parsed pattern `items` can match the empty string."""
    for op, arg in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            if arg[0] > 0 and not _nullable(arg[2]):
                return False
        elif name == "SUBPATTERN":
            if not _nullable(arg[-1]):
                return False
        elif name == "BRANCH":
            if not any(_nullable(branch) for branch in arg[1]):
                return False
        elif name not in ("AT", "ASSERT", "ASSERT_NOT"):
            return False
    return True


KEYWORDS = frozenset({"properties", "$defs", "items", "additionalProperties", "$ref", "type", "enum",
                      "required", "maxLength", "pattern", *_BRANCHES, *_COUNTS, *_NUMBERS,
                      *_ANNOTATIONS, *_ANY_VALUE})


def rewrite_subschemas(schema: dict[str, Any], rewrite: Callable[[dict[str, Any]], dict[str, Any]]
                       ) -> dict[str, Any]:
    """`schema` with `rewrite` applied to each of its subschemas, innermost first, and to itself.
    Values that are data (enum, const, default, examples) are left alone. For checked schemas."""
    node = dict(schema)
    for keyword, value in schema.items():
        if keyword in ("properties", "$defs") and isinstance(value, dict):
            node[keyword] = {k: rewrite_subschemas(v, rewrite) for k, v in value.items()}
        elif keyword in ("items", "additionalProperties") and isinstance(value, dict):
            node[keyword] = rewrite_subschemas(value, rewrite)
        elif keyword in _BRANCHES and isinstance(value, list):
            node[keyword] = [rewrite_subschemas(v, rewrite) for v in value]
    return rewrite(node)


def without_patterns(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` without `pattern`s: grammar engines cannot bound what an ambiguous one costs per
    token (`^(a?){200}a{200}$`), so a grammar leaves them out and the output is checked after."""
    return rewrite_subschemas(schema, lambda node: {k: v for k, v in node.items() if k != "pattern"})


def grammar_safe(schema: dict[str, Any], max_length: int) -> dict[str, Any]:
    """A checked schema a grammar engine can enforce at a bounded cost: no patterns, and no
    `maxLength` above `max_length` (a grammar repeats a character rule that many times)."""
    return rewrite_subschemas(without_patterns(schema), lambda node: node if node.get(
        "maxLength", 0) <= max_length else {k: v for k, v in node.items() if k != "maxLength"})
