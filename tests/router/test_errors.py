"""One table from error type to status; one JSON shape."""

from __future__ import annotations

import pytest

from router.errors import (
    AllProvidersFailed,
    AuthenticationFailed,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServiceError,
    status_of,
)


@pytest.mark.parametrize(("error", "status"), [
    (ServiceError("x"), 500),
    (InvalidRequest("x"), 400),
    (ModelNotFound("m", ["a"]), 404),
    (PayloadTooLarge("x"), 413),
    (AuthenticationFailed("x"), 401),
    (RateLimited("x"), 429),
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
