"""OpenAI's published component schemas (tests/data/openai/openapi-schemas.json) as validators:
`check("CreateChatCompletionResponse", body)` fails naming every difference. The document marks
nullable fields with OpenAPI 3.0's `nullable: true`; it is translated to JSON Schema's `null` type
once, on load, and each schema is validated as `{"$ref": ..., "components": ...}` (Draft 2020-12)."""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent / "data" / "openai" / "openapi-schemas.json"


def _nullable(node: Any) -> Any:
    """`{"type": "string", "nullable": true, ...}` -> `{"anyOf": [{"type": "string", ...},
    {"type": "null"}]}`, everywhere in the document (an `enum` must admit null too)."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if node.get("nullable") is True:
        del node["nullable"]
        return {"anyOf": [node, {"type": "null"}]}
    return node


@functools.cache
def _components() -> dict[str, Any]:
    components: dict[str, Any] = _nullable(json.loads(SCHEMAS.read_text())["components"])
    return components


@functools.cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                 "components": _components()})


def problems(name: str, body: Any) -> list[str]:
    """What in `body` does not match OpenAI's schema `name` (empty when it all does)."""
    return [f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
            for error in validator(name).iter_errors(body)]


def check(name: str, body: Any) -> None:
    found = problems(name, body)
    assert not found, f"not a valid {name}: {found}\n{json.dumps(body)[:2000]}"


def check_embeddings(body: dict[str, Any], dims: int | None = None) -> list[list[float]]:
    """A CreateEmbeddingResponse in either encoding: base64 vectors (little-endian float32s, what
    OpenAI sends for `encoding_format: base64`) are decoded and checked as the float form."""
    data = [{**item, "embedding": _decoded(item["embedding"])} for item in body["data"]]
    check("CreateEmbeddingResponse", {**body, "data": data})
    vectors: list[list[float]] = [item["embedding"] for item in data]
    assert dims is None or all(len(v) == dims for v in vectors), [len(v) for v in vectors]
    return vectors


def _decoded(embedding: Any) -> Any:
    if not isinstance(embedding, str):
        return embedding
    return np.frombuffer(base64.b64decode(embedding, validate=True), "<f4").tolist()


def sse_data(text: str) -> list[Any]:
    """The JSON payloads of an SSE body, in order, after checking it ends with `data: [DONE]`."""
    payloads = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    assert payloads and payloads[-1] == "[DONE]", text[-500:]
    return [json.loads(payload) for payload in payloads[:-1]]
