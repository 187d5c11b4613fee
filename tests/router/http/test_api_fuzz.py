"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis + hypothesis):
whatever the input, no 500 and no untyped error. It runs against the API-only app (hosted models
are the fakes), so the model behind it answers in milliseconds and every route is reachable."""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from router.http.routes import routes

# A provider failing is the one 5xx that input cannot cause but the fakes can: they cannot write
# quiz JSON, so structured content fails validation, repair and escalation: a typed 502.
UPSTREAM = {"upstream_error", "timeout_error", "service_unavailable"}


OPERATIONS = sorted((method, route.path) for route in routes.routes for method in route.methods)


@pytest.fixture(scope="session")
def lite_schema(lite_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{lite_url}/openapi.json")


def error_of(body: Any) -> dict[str, Any]:
    """The error object of the JSON error shape, or of the content API's terminal error event."""
    if not isinstance(body, dict):
        return {}
    if isinstance(body.get("error"), dict):
        return body["error"]
    metadata = body.get("metadata") or {}
    return metadata.get("error") or {} if body.get("type") == "error" else {}


def check(path: str, response: Any) -> None:
    try:
        body = json.loads(response.text)
    except ValueError:
        body = None
    where = (path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        error = error_of(body)
        assert error.get("type") and error.get("message"), where
    if response.status_code >= 500:
        assert response.status_code != 500, where
        assert error_of(body)["type"] in UPSTREAM, where


# schemathesis' own pytest loader (from_fixture) does not run on pytest 9, so each operation's
# hypothesis strategy is driven here directly.
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_input_gets_a_server_error(lite_schema: Any, lite_url: str, method: str,
                                      path: str) -> None:
    operation = lite_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def fuzz(case: Any) -> None:
        check(path, case.call(base_url=lite_url, timeout=60))

    fuzz()
