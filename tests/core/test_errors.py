"""One table from error type to status; one JSON shape."""

from __future__ import annotations

import pytest

from core.errors import (
    AllProvidersFailed,
    AuthenticationFailed,
    BudgetExceeded,
    InvalidRequest,
    LimitExceeded,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServiceError,
    error_response,
    status_of,
)


@pytest.mark.parametrize(("error", "status"), [
    (ServiceError("x"), 500),
    (InvalidRequest("x"), 400),
    (ModelNotFound("m", ["a"]), 404),
    (PayloadTooLarge("x"), 413),
    (AuthenticationFailed("x"), 401),
    (PermissionDenied("x"), 403),
    (RateLimited("x", retry_after=1.5), 429),
    (BudgetExceeded("x"), 402),
    (LimitExceeded("x"), 422),
    (ProviderError("x", provider="p", model="m"), 502),
    (ProviderTimeout("x", provider="p", model="m"), 504),
    (AllProvidersFailed([]), 503),
])
def test_status_table(error: ServiceError, status: int) -> None:
    assert status_of(error) == status


def test_body_has_openai_shape() -> None:
    body = ModelNotFound("gpt-9", ["smollm2-135m"]).body()
    assert body == {"error": {
        "type": "invalid_request_error", "code": "model_not_found", "param": "model",
        "message": "The model 'gpt-9' does not exist here; available models: smollm2-135m"}}


def test_rate_limited_says_when_to_retry() -> None:
    response = error_response(RateLimited("slow down", retry_after=1.2))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"  # whole seconds, rounded up


def test_the_drawn_tree_matches_the_classes_and_the_table() -> None:
    """Each line of the module docstring's tree names a class, its parent by indentation, and its
    status from the table."""
    import re

    import core.errors as errors

    lines = [line for line in (errors.__doc__ or "").splitlines() if re.search(r"\s\d{3}\b", line)]
    parents: dict[int, type] = {}
    for line in lines:
        name, status = re.search(r"(\w+)\s+(\d{3})", line).groups()  # type: ignore[union-attr]
        depth = (len(line) - len(line.lstrip(" │├└─")) - 4) // 4
        cls = getattr(errors, name)
        parents[depth] = cls
        if depth:
            assert cls.__bases__ == (parents[depth - 1],), name
        assert errors.STATUS[cls] == int(status), name
    assert len(lines) == len(errors.STATUS)
