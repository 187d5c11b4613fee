"""OpenAI's published component schemas (tests/data/openai/) as a validator: `check("Response",
body)` fails with every way `body` differs from what OpenAI's own clients expect.

The document marks nullable fields with OpenAPI 3.0's `nullable: true`, which JSON Schema does not
know: each such schema is rewritten to also admit null before validating."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent / "data" / "openai" / "openapi-schemas.json"


def check(name: str, body: Any) -> None:
    """Raise AssertionError listing where `body` breaks the component schema `name`."""
    errors = sorted(validator(name).iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {_reason(e)}" for e in errors]
        raise AssertionError(f"not a valid {name}:\n" + "\n".join(lines) + f"\n{json.dumps(body)[:2000]}")


def _reason(error: Any) -> str:
    """The error, or for a oneOf/anyOf that matched nothing, the errors of its closest branch."""
    if error.context:
        best = max(error.context, key=lambda e: len(list(e.absolute_path)))
        return f"{error.message[:200]} (closest: {best.message[:300]})"
    return str(error.message[:500])


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                 "components": _components()})


@cache
def _components() -> dict[str, Any]:
    components: dict[str, Any] = json.loads(SCHEMAS.read_text())["components"]
    return {"schemas": {name: nullable(schema) for name, schema in components["schemas"].items()}}


def nullable(schema: Any) -> Any:
    """`schema` with every `nullable: true` turned into a JSON Schema that also admits null."""
    if isinstance(schema, list):
        return [nullable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    rewritten = {key: nullable(value) for key, value in schema.items()}
    if rewritten.get("nullable") is not True:
        return rewritten
    del rewritten["nullable"]
    return {"anyOf": [rewritten, {"type": "null"}]}
