"""What the service sends, checked against OpenAI's own published schemas
(../shared/data/openai/openapi-schemas.json, see its README): `assert_valid("CreateChatCompletionResponse",
body)`; `assert_stream_valid(sse_text)` for every chunk of a chat stream.

The document marks nullable fields OpenAPI 3.0's way (`nullable: true`); they are translated to
JSON Schema's null type before validating (Draft 2020-12)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "data" / "openai" / "openapi-schemas.json"


def _nullable(node: Any) -> Any:
    """`node` with every `nullable: true` turned into a type that admits null."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if not node.pop("nullable", False):
        return node
    if "enum" in node and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]
    kind = node.get("type")
    if isinstance(kind, str):
        return {**node, "type": [kind, "null"]}
    if isinstance(kind, list):
        return {**node, "type": [*kind, "null"]} if "null" not in kind else node
    return {"anyOf": [node, {"type": "null"}]}


@functools.cache
def _components() -> dict[str, Any]:
    document = json.loads(SCHEMAS.read_text())
    return {"schemas": _nullable(document["components"]["schemas"])}


@functools.cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                 "components": _components()})


def problems(name: str, body: Any) -> list[str]:
    """Each way `body` breaks OpenAI's schema `name`: where, and what."""
    return [f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
            for error in validator(name).iter_errors(body)]


def assert_valid(name: str, body: Any) -> None:
    found = problems(name, body)
    assert not found, f"not a valid {name}: {found}\n{json.dumps(body)[:2000]}"


def stream_chunks(sse_text: str) -> list[dict[str, Any]]:
    """The JSON of each `data:` line of an SSE body, up to `data: [DONE]` (which must end it)."""
    data = [line[6:] for line in sse_text.splitlines() if line.startswith("data: ")]
    assert data and data[-1] == "[DONE]", f"the stream does not end with data: [DONE]: {data[-1:]}"
    return [json.loads(item) for item in data[:-1]]


def assert_stream_valid(sse_text: str) -> list[dict[str, Any]]:
    """Every chunk of a chat completion stream (an error event is an ErrorResponse); the chunks."""
    chunks = stream_chunks(sse_text)
    for chunk in chunks:
        assert_valid("ErrorResponse" if "error" in chunk else "CreateChatCompletionStreamResponse",
                     chunk)
    return chunks
