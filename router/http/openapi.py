"""The OpenAPI document, as true as the service: each route lists every status it answers, in the
one error shape with an example made by the error classes themselves; streamed routes document
`text/event-stream` with the schema of each event's data (OpenAI's own convention); the API key
schemes are declared. FastAPI's 422 `HTTPValidationError` is left out: invalid input answers 400 in
the error shape. Schemas keep their model names, so clients can be generated from the document."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from core.errors import (
    AllProvidersFailed,
    AuthenticationFailed,
    BudgetExceeded,
    IdempotencyConflict,
    InvalidRequest,
    LimitExceeded,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    RunExpired,
    ServiceError,
)
from router.http.auth import OPEN_PATHS
from router.http.runs import RESUMABLE
from router.wire import sse
from router.wire.completions import TextCompletion
from router.wire.learnx import ContentEvent
from router.wire.replies import ChatCompletionChunk, ErrorResponse
from router.wire.responses import ResponseStreamEvent
from router.wire.rules import TEXT_PATTERN

DESCRIPTION = """\
OpenAI-compatible chat completions, embeddings and models (`/v1/*`), and the LEARN-X API the Node
backend calls (`/api/v1/ai/*`).

- **Errors** have one shape on every route, `ErrorResponse` (`{"error": {"type", "message", "code",
  "param"}}`); each operation lists the statuses it answers. A method a path does not serve is a 405
  with the `Allow` header; an unknown path is a 404.
- **Parameters**: a parameter a route does not support is a 400 naming it (`param`), never silently
  dropped, except the advisory hints OpenAI itself ignores (described on `OpenAIHints`' fields).
- **Streams** (`stream: true`) are `text/event-stream`: each event's `data` is one JSON object of the
  schema documented for that media type, the stream ends with `data: [DONE]`, and a failure after
  the first event is an `ErrorResponse` event before it. Each event's `id` names its run and
  number: after a dropped connection, the same request with `Last-Event-ID` resumes the run
  (`GET /v1/runs/{run_id}/events` likewise; `POST /v1/runs/{run_id}/cancel` stops it).
"""

EVENT_ID_PATTERN = r"^run_[0-9a-f]{32}:[0-9]{1,9}$"
# A stream's reconnect: the same request, resuming after this event (router/http/runs.py).
LAST_EVENT_ID = {"name": "Last-Event-ID", "in": "header", "required": False,
                 "description": "a reconnect (streams): the id of the last event received; the "
                                "answer replays the events after it and follows the run",
                 "schema": {"type": "string", "pattern": EVENT_ID_PATTERN}}
# Models that are streamed as SSE event data: added to the components beside the response models.
EVENT_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionChunk, ContentEvent, TextCompletion,
                                              ResponseStreamEvent)

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer"}}}
ERRORS: dict[int, tuple[str, ServiceError, dict[str, Any]]] = {
    400: ("Invalid input: the message says what to fix and `param` names the field or header.",
          InvalidRequest("logit_bias: not a parameter this service supports; remove it (the README "
                         "lists the supported and advisory parameters of each route)",
                         param="logit_bias"), {}),
    401: ("A missing or invalid API key (when auth is on).",
          AuthenticationFailed("invalid API key", code="invalid_api_key"),
          {"WWW-Authenticate": {"schema": {"type": "string"}}}),
    402: ("A budget of the caller's levels (tenant, group, the learner's share of it, user) "
          "cannot cover the request: `level` and `period` say which.",
          BudgetExceeded("the spending budget of group 'class-7a' cannot cover this request "
                         "(estimated $0.004200); it resets at the start of the next period (UTC)",
                         level="group", period="week"), {}),
    403: ("The API key does not allow this: an admin key is needed, or the request's `tier` is "
          "above the key's max_tier.",
          PermissionDenied("reading the usage of all users (no user_id) needs an admin key; the "
                           "key 'node-backend' is a service key"), {}),
    404: ("The model does not exist here, or no run of this API key has the id that "
          "`Last-Event-ID` (or the path) names.",
          ModelNotFound("gpt-5", ["smollm2-135m", "gpt-4o-mini", "small", "large"]), {}),
    409: ("A request with this Idempotency-Key is still running, or the run named was stopped "
          "(`run_stopped`: it stays stopped).",
          IdempotencyConflict("a request with this Idempotency-Key is still running; retry "
                              "after it ends"), _RETRY_AFTER),
    410: ("The run's events after the id named are no longer kept (its `keep_s` passed, it was "
          "longer than its bounds, or it was cancelled after its client left).",
          RunExpired("the events of run 'run_9f0c2a4e51b7d3c8a6e0f4b2d1c3e5a7' after 12 are no "
                     "longer kept: send the request again without Last-Event-ID"), {}),
    413: ("The body is larger than the limit.",
          PayloadTooLarge("the request body is larger than 1000000 bytes: send less text per "
                          "request"), {}),
    422: ("Too many messages or texts, a text too long, an Idempotency-Key reused with another "
          "request, or a Last-Event-ID sent with another request than its run's.",
          LimitExceeded("300 messages in one request; the limit is 256: summarize or drop older "
                        "turns", param="messages"), {}),
    429: ("Over a rate limit: retry after `Retry-After` seconds.",
          RateLimited("rate limit of key 'node-backend': 600 requests per minute",
                      retry_after=2), _RETRY_AFTER),
    502: ("A provider failed in a way another attempt would not fix (e.g. no model produced valid "
          "structured output).",
          ProviderError("no model produced valid quiz JSON", provider="router", model="small",
                        retryable=False), {}),
    503: ("No configured provider serves the model, every candidate failed (`tried` lists them), or "
          "a store the service needs does not answer (with `Retry-After` when known).",
          AllProvidersFailed([("openai/gpt-4o-mini", "HTTP 503"),
                              ("anthropic/claude-haiku-4-5", "timed out")]),
          {"Retry-After": {**_RETRY_AFTER["Retry-After"], "required": False}}),
    504: ("The provider timed out.",
          ProviderTimeout("timed out", provider="openai", model="gpt-4o-mini"), {}),
}
# What a generation route answers besides 200: input, auth, limits, budgets, idempotency, providers.
GENERATION = (400, 401, 402, 404, 409, 413, 422, 429, 502, 503, 504)
# A generation with a `tier` the key may not ask (core/tiers.py); a stream's reconnect whose events
# are no longer kept (router/http/runs.py).
TIERED = (*GENERATION, 403, 410)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` entries of a route that answers these error statuses."""
    return {status: {"model": ErrorResponse, "description": ERRORS[status][0],
                     "content": {"application/json": {"example": ERRORS[status][1].body()}},
                     **({"headers": ERRORS[status][2]} if ERRORS[status][2] else {})}
            for status in statuses}


def streamed(body: type[BaseModel], event: type[BaseModel],
             description: str) -> dict[int | str, dict[str, Any]]:
    """The 200 of a route that answers `body` as JSON, or with `stream: true` SSE events whose
    `data` is an `event` (one of EVENT_MODELS) as JSON, an ErrorResponse, or the final `[DONE]`.
    The schema describes one event (`data`, `event`, `id`), as OpenAPI 3.2's `itemSchema` does."""
    assert event in EVENT_MODELS, f"add {event.__name__} to EVENT_MODELS"
    data = {"anyOf": [
        {"const": "[DONE]", "description": "the end of the stream"},
        {"type": "string", "contentMediaType": "application/json", "contentSchema": {"anyOf": [
            {"$ref": f"#/components/schemas/{event.__name__}"},
            {"$ref": "#/components/schemas/ErrorResponse"}]}}]}
    event_id = {"type": "string", "pattern": EVENT_ID_PATTERN, "description": (
        "the run and the event's number (router/http/runs.py): what Last-Event-ID resumes after")}
    schema = {"type": "object", "required": ["data"],
              "properties": {"data": data, "id": event_id}}
    return {200: {"model": body, "description": description,
                  "content": {"text/event-stream": {"schema": schema}},
                  "headers": {sse.RUN_HEADER: {"description": "the stream's run (streams only)",
                                               "schema": {"type": "string"}}}}}


def _request_schemas(doc: dict[str, Any]) -> set[str]:
    """The component schemas request bodies use, directly or through others."""
    schemas = doc["components"]["schemas"]
    pending = [body for path in doc["paths"].values() for op in path.values()
               for body in [op.get("requestBody")] if body]
    found: set[str] = set()
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            name = ref.rsplit("/", 1)[-1]
            if ref.startswith("#/components/schemas/") and name not in found:
                found.add(name)
                pending.append(schemas[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def _text_rule(node: Any) -> None:
    """State the text rule every request string obeys (router/wire/rules.py's Wire): no control
    character but tab, newline and carriage return, in values and in object keys."""
    if isinstance(node, list):
        for item in node:
            _text_rule(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and not {"pattern", "enum", "const", "format"} & set(node):
        node["pattern"] = TEXT_PATTERN
    if node.get("type") == "object" and node.get("additionalProperties") not in (None, False):
        node.setdefault("propertyNames", {}).setdefault("pattern", TEXT_PATTERN)
    for key, value in node.items():
        if key not in ("const", "enum", "default", "examples", "example"):
            _text_rule(value)


def install(app: FastAPI, auth: bool) -> None:
    """Serve `document(app, auth)` as the app's /openapi.json (built once)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, auth)
        return app.openapi_schema
    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI, auth: bool = True) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=DESCRIPTION,
                      routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    _, events = models_json_schema([(m, "serialization") for m in EVENT_MODELS],
                                   ref_template="#/components/schemas/{model}")
    for name, schema in events.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    for operation in (op for path in doc["paths"].values() for op in path.values()):
        if "HTTPValidationError" in str(operation["responses"].get("422", "")):
            del operation["responses"]["422"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    for name in _request_schemas(doc):
        _text_rule(schemas[name])
    if auth:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "the service's API key"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        doc["security"] = [{"bearer": []}, {"apiKey": []}]
        for path in OPEN_PATHS:
            for operation in doc["paths"].get(path, {}).values():
                operation["security"] = []
    for path in RESUMABLE:
        doc["paths"][path]["post"].setdefault("parameters", []).append(LAST_EVENT_ID)
    return doc
