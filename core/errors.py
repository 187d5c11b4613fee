"""The error tree and the one table from error type to HTTP status.

    ServiceError                      500 server_error
    ├── InvalidRequest                400 invalid_request_error
    │   ├── ModelNotFound             404
    │   ├── NotFound                  404  (no such resource, e.g. no budget at a level)
    │   ├── PayloadTooLarge           413
    │   ├── ContextExceeded           400  (too long for one model: a larger candidate may fit it)
    │   ├── LimitExceeded             422  (too many messages / texts, a text too long)
    │   ├── IdempotencyKeyReused      422  (an Idempotency-Key sent again with another request)
    │   ├── RunNotFound               404  (no run of this key by that id: never a new generation)
    │   ├── RunExpired                410  (the run's events after that id are no longer kept)
    │   └── RunMismatch               422  (a Last-Event-ID sent with another request than its run's)
    ├── AuthenticationFailed          401 authentication_error
    ├── PermissionDenied              403 permission_error     (the key's role does not allow it)
    ├── BudgetExceeded                402 budget_exceeded      (a budget of the caller's levels is spent)
    ├── RateLimited                   429 rate_limit_error     (with Retry-After)
    │   └── ModelBusy                 429  (a local model's slots and queue are full)
    ├── IdempotencyConflict           409 conflict_error       (its Idempotency-Key still runs)
    ├── RunStopped                    409 conflict_error       (the run was stopped: it stays so)
    ├── ModelUnavailable              503 service_unavailable  (no configured provider serves it)
    ├── StorageUnavailable            503 service_unavailable  (the ledger's database, the budget store)
    ├── AllProvidersFailed            503 service_unavailable  (every candidate failed; lists them)
    └── ProviderError                 502 upstream_error       (one provider/model failed)
        └── ProviderTimeout           504 timeout_error

Raise these, never HTTPException; `error_response` renders any of them in OpenAI's shape.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from fastapi.responses import JSONResponse

from core.generation import TokenUsage


class ServiceError(Exception):
    error_type: ClassVar[str] = "server_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.error_type, "message": self.message,
                          "code": self.code, "param": self.param}}

    def headers(self) -> dict[str, str]:
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from attributes, not __init__ arguments: errors raised in one deployment arrive
        # typed and whole in another (Ray pickles exceptions across processes).
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[ServiceError], message: str, state: dict[str, Any]) -> ServiceError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class InvalidRequest(ServiceError):
    error_type = "invalid_request_error"


class ModelNotFound(InvalidRequest):
    def __init__(self, model: str, available: list[str], problem: str = "", how: str = ""):
        """`problem`: what is wrong with the model, when it exists (`is a chat model, ...`);
        `how`: what an operator does to offer it."""
        super().__init__(
            f"The model {model!r} {problem or 'does not exist here'}; available models: "
            f"{', '.join(available)}" + (f"; {how}" if how else ""), code="model_not_found",
            param="model")


class NotFound(InvalidRequest):
    def __init__(self, message: str):
        super().__init__(message, code="not_found")


class PayloadTooLarge(InvalidRequest):
    pass


class ContextExceeded(InvalidRequest):
    """The prompt does not fit one model's context window. The router moves on to the next
    candidate; only when none fits is it the caller's answer."""


class LimitExceeded(InvalidRequest):
    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message, code="limit_exceeded", param=param)


class IdempotencyKeyReused(InvalidRequest):
    def __init__(self, message: str):
        super().__init__(message, code="idempotency_key_reused", param="Idempotency-Key")


class RunNotFound(InvalidRequest):
    def __init__(self, run: str, param: str = "Last-Event-ID"):
        super().__init__(f"no run {run!r} of this API key is kept here: send the request without "
                         "Last-Event-ID to start a new one", code="run_not_found", param=param)


class RunExpired(InvalidRequest):
    def __init__(self, message: str, param: str = "Last-Event-ID"):
        super().__init__(message, code="run_expired", param=param)


class RunMismatch(InvalidRequest):
    def __init__(self, run: str):
        super().__init__(f"Last-Event-ID names run {run!r}, which another request started: resume "
                         "with the same route and body, or send this request without it",
                         code="run_mismatch", param="Last-Event-ID")


class AuthenticationFailed(ServiceError):
    error_type = "authentication_error"


class PermissionDenied(ServiceError):
    error_type = "permission_error"

    def __init__(self, message: str, *, code: str = "admin_key_required",
                 param: str | None = None):
        super().__init__(message, code=code, param=param)


class BudgetExceeded(ServiceError):
    """`level` (tenant, group, learner_share, user) and `period` (day, week, month, term): the
    budget that cannot cover the request, in the body beside the message."""

    error_type = "budget_exceeded"

    def __init__(self, message: str, *, level: str | None = None, period: str | None = None):
        super().__init__(message, code="budget_exceeded")
        self.level = level
        self.period = period

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"] |= {"level": self.level, "period": self.period}
        return body


class RateLimited(ServiceError):
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message, code="rate_limited")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class ModelBusy(RateLimited):
    """A local model cannot start the request soon enough (its slots are busy and its queue is
    full or longer than the request may wait). Load, not an outage: the router hands the request to
    the next candidate without counting it against the model's health; the last candidate's
    refusal is the caller's 429."""

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message, retry_after=retry_after)
        self.code = "model_busy"


class IdempotencyConflict(ServiceError):
    error_type = "conflict_error"

    def __init__(self, message: str):
        super().__init__(message, code="idempotency_key_in_use", param="Idempotency-Key")

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class RunStopped(ServiceError):
    """The run was stopped (POST /v1/runs/{id}/cancel): the end of its stream, and the answer to
    every later resume."""

    error_type = "conflict_error"

    def __init__(self, run: str):
        super().__init__(f"the run {run!r} was stopped; send the request again without "
                         "Last-Event-ID for a new one", code="run_stopped")


class ModelUnavailable(ServiceError):
    error_type = "service_unavailable"

    def __init__(self, message: str):
        super().__init__(message, code="model_unavailable", param="model")


class StorageUnavailable(ServiceError):
    """A store the service keeps its records in (the usage ledger's database, the budget store)
    does not answer. `code` names which; `retry_after` says when to try again, when known."""

    error_type = "service_unavailable"

    def __init__(self, message: str, *, code: str = "storage_unavailable",
                 retry_after: float | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class ProviderError(ServiceError):
    """One provider call failed. `retryable` and `upstream_status` drive retries and breakers;
    `usage` is what the provider reported before failing (it bills that prompt)."""

    error_type = "upstream_error"

    def __init__(self, message: str, *, provider: str, model: str,
                 upstream_status: int | None = None, retryable: bool = True,
                 retry_after: float | None = None, usage: TokenUsage | None = None):
        super().__init__(f"{provider}/{model}: {message}", code="provider_error")
        self.provider = provider
        self.model = model
        self.upstream_status = upstream_status
        self.retryable = retryable
        self.retry_after = retry_after
        self.usage = usage


class ProviderTimeout(ProviderError):
    error_type = "timeout_error"


class AllProvidersFailed(ServiceError):
    error_type = "service_unavailable"

    def __init__(self, tried: list[tuple[str, str]]):
        """`tried`: (provider/model, what happened) per attempt, in order."""
        detail = "; ".join(f"{route} ({what})" for route, what in tried)
        super().__init__(f"all providers failed: {detail or 'no provider could be tried'}",
                         code="all_providers_failed")
        self.tried = tried

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["tried"] = [route for route, _ in self.tried]
        return body


STATUS: dict[type[ServiceError], int] = {
    ServiceError: 500,
    InvalidRequest: 400,
    ModelNotFound: 404,
    PayloadTooLarge: 413,
    ContextExceeded: 400,
    NotFound: 404,
    LimitExceeded: 422,
    IdempotencyKeyReused: 422,
    IdempotencyConflict: 409,
    RunNotFound: 404,
    RunExpired: 410,
    RunMismatch: 422,
    RunStopped: 409,
    AuthenticationFailed: 401,
    PermissionDenied: 403,
    BudgetExceeded: 402,
    RateLimited: 429,
    ModelBusy: 429,
    ModelUnavailable: 503,
    StorageUnavailable: 503,
    ProviderError: 502,
    ProviderTimeout: 504,
    AllProvidersFailed: 503,
}


def status_of(error: ServiceError) -> int:
    for klass in type(error).__mro__:
        if klass in STATUS:
            return STATUS[klass]
    return 500


def error_response(error: ServiceError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=status_of(error),
                        headers={**error.headers(), **(headers or {})})
