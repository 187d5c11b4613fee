"""The caller's mistakes through the real HTTP proxy, Serve graph and llama.cpp: hostile schemas and
invalid text are 400s that name what to fix; none crashes or jams the local replica, none counts
against the local model, which keeps serving."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.conftest import AUTH
from tests.metrics import samples

MODEL = "smollm2-135m"
HELLO = [{"role": "user", "content": "Say hello to a new student."}]
SCHEMA = "response_format.json_schema.schema"


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    """The body as JSON.stringify sends it: unpaired surrogates escaped, e.g. "\\ud83d"."""
    return httpx.post(f"{url}/v1/chat/completions", content=json.dumps(body), timeout=60,
                      headers={**AUTH, "content-type": "application/json"})


def structured(schema: Any, stream: bool = False) -> dict[str, Any]:
    return {"model": MODEL, "messages": HELLO, "max_tokens": 16, "stream": stream,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "answer", "schema": schema}}}


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels - 1):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


# Each crashed the replica (a grammar llama.cpp refuses segfaults it while sampling), hung it (its
# grammar converter loops forever) or raised inside it (a 500) before it was refused.
HOSTILE: dict[str, tuple[Any, str]] = {
    "300-levels-deep": (nested(300), SCHEMA),
    "huge-min-length": ({"type": "string", "minLength": 100_000}, f"{SCHEMA}.minLength"),
    "huge-min-items": ({"type": "array", "items": {"type": "integer"}, "minItems": 10_000},
                       f"{SCHEMA}.minItems"),
    "huge-max-items": ({"type": "array", "items": {"type": "string"}, "maxItems": 5000},
                       f"{SCHEMA}.maxItems"),
    "ref-cycle": ({"$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/a"}}},
                   "$ref": "#/$defs/a"}, f"{SCHEMA}.$defs.a.items.$ref"),
    "non-numeric-bound": ({"type": "string", "maxLength": "many"}, f"{SCHEMA}.maxLength"),
    "unknown-type": ({"type": "object", "properties": {"n": {"type": "strnig"}}},
                     f"{SCHEMA}.properties.n.type"),
    "huge-schema": ({"type": "object", "properties": {
        f"p{i}": {"type": "string", "description": "words " * 80} for i in range(60)}}, SCHEMA),
    "pattern-that-hangs-the-converter": ({"type": "string", "pattern": "^a]$"},
                                         f"{SCHEMA}.pattern"),
    # Within the router's bounds, refused by llama.cpp itself: the replica's own 400.
    "pattern-llama-cpp-refuses": ({"type": "string", "pattern": "^\\d{3}$"},
                                  "response_format.json_schema"),
}


def generations() -> dict[tuple[str, str], float]:
    """(replica, outcome) -> the local model's generations so far, from its Ray metrics."""
    return {(labels["replica"], labels["outcome"]): value
            for labels, value in samples("ray_learnx_llm_generations_total")
            if labels.get("model") == MODEL}


def generated_since(before: dict[tuple[str, str], float],
                    expected: int) -> dict[tuple[str, str], float]:
    """What changed since `before`, once `expected` generations are reported (every 500 ms)."""
    deadline = time.monotonic() + 30
    while True:
        now = generations()
        changed = {k: v - before.get(k, 0) for k, v in now.items() if v != before.get(k, 0)}
        if sum(changed.values()) >= expected or time.monotonic() > deadline:
            return changed
        time.sleep(0.2)


@pytest.mark.parametrize("stream", [False, True])
def test_hostile_schemas_are_400s_and_the_replica_keeps_serving(serve_url: str,
                                                                stream: bool) -> None:
    before = generations()
    for name, (schema, param) in HOSTILE.items():
        response = post(serve_url, structured(schema, stream))
        assert response.status_code == 400, name
        error = response.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", param), name
        assert error["message"].startswith(param), name
    greeting = {"type": "object", "required": ["greeting"],
                "properties": {"greeting": {"type": "string", "maxLength": 40}}}
    served = post(serve_url, {**structured(greeting), "max_tokens": 64, "temperature": 0})
    assert served.status_code == 200
    assert served.headers["x-learnx-route"] == f"local/{MODEL}"
    json.loads(served.json()["choices"][0]["message"]["content"])
    # Only the schema llama.cpp refused reached the replica, besides the good request, and the
    # same replica served both (a restarted one would report under a new replica id).
    changed = generated_since(before, expected=2)
    (replica,) = {r for r, _ in changed}
    assert changed == {(replica, "rejected"): 1, (replica, "finished"): 1}
    assert not before or replica in {r for r, _ in before}


HALF_EMOJI = "a broken emoji: \ud83d"
MISTAKES = [
    [*HELLO, {"role": "user", "content": [{"type": "text", "text": HALF_EMOJI}]}],
    [{"role": "user", "content": HALF_EMOJI}],
    # (A prompt too long for the local model is no longer the caller's mistake while a larger
    # candidate fits it: it moves on; tests/router/http/test_caller_errors.py.)
]


def test_the_callers_mistakes_leave_the_local_breaker_closed(serve_url: str) -> None:
    bodies = [{"model": MODEL, "messages": m, "max_tokens": 8} for m in MISTAKES]
    bodies.append(structured(HOSTILE["pattern-llama-cpp-refuses"][0]))
    for body in bodies * 2:  # 6 in a row: more than the breaker's failure threshold (5)
        response = post(serve_url, body)
        assert response.status_code == 400, response.text
    breakers = httpx.get(f"{serve_url}/health/providers", headers=AUTH).json()["breakers"]
    assert breakers[f"local/{MODEL}"]["state"] == "closed"
    assert breakers[f"local/{MODEL}"]["consecutive_failures"] == 0
    served = post(serve_url, {"model": MODEL, "messages": HELLO, "max_tokens": 8})
    assert served.status_code == 200
    assert served.headers["x-learnx-route"] == f"local/{MODEL}"
