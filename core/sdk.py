"""The hosted providers' SDKs at their boundary: building the OpenAI client from the environment, and
the one translation of SDK exceptions and upstream HTTP failures into core.errors.

The `openai` and `anthropic` SDKs share their exception tree, so one function translates both, by
type and status code (never by message text): InvalidRequest for what the caller must fix,
ProviderError for everything else. Upstream messages are not passed on: they can quote credentials
and other internals."""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

import httpx2
import openai

from core.config import HostedProviderConfig
from core.errors import InvalidRequest, ProviderError, ProviderTimeout, ServiceError

# Upstream statuses caused by the request itself: retrying or another provider will not help.
_CALLER_FAULTS = {400, 413, 422}
# Statuses worth retrying on the same provider (after backoff / Retry-After).
_RETRYABLE = {408, 409, 429, 500, 502, 503, 504, 529}


def openai_client(config: HostedProviderConfig, environ: Mapping[str, str],
                  max_retries: int) -> openai.AsyncOpenAI | None:
    """The SDK client, or None without OPENAI_API_KEY. base_url None lets the SDK apply
    OPENAI_BASE_URL itself."""
    key = environ.get("OPENAI_API_KEY")
    if not config.enabled or not key:
        return None
    return openai.AsyncOpenAI(api_key=key, base_url=config.base_url, max_retries=max_retries,
                              timeout=config.timeout_s)


def upstream_error(provider: str, model: str, *, status: int | None = None, timeout: bool = False,
                   retry_after: float | None = None) -> ServiceError:
    """The router error for a failed upstream call."""
    if timeout:
        return ProviderTimeout("timed out", provider=provider, model=model)
    if status is None:
        return ProviderError("connection failed", provider=provider, model=model)
    if status in _CALLER_FAULTS:
        return InvalidRequest(f"{provider} rejected the request as invalid (HTTP {status})")
    return ProviderError(f"HTTP {status}", provider=provider, model=model, upstream_status=status,
                         retryable=status in _RETRYABLE or status >= 500, retry_after=retry_after)


def translate_sdk_error(sdk: ModuleType, provider: str, model: str,
                        error: Exception) -> ServiceError:
    """An `openai` or `anthropic` SDK exception as the router's error: a timeout, an HTTP status, a
    failed connection, else a malformed response."""
    if isinstance(error, sdk.APITimeoutError):
        return upstream_error(provider, model, timeout=True)
    if isinstance(error, sdk.APIStatusError):
        return upstream_error(provider, model, status=error.status_code,
                              retry_after=retry_after_seconds(error.response.headers))
    if broken_transfer(sdk, error):
        return upstream_error(provider, model)
    if isinstance(error, httpx2.TimeoutException):
        return upstream_error(provider, model, timeout=True)
    return ProviderError(f"malformed response ({type(error).__name__})", provider=provider,
                         model=model)


def broken_transfer(sdk: ModuleType, error: Exception) -> bool:
    """The connection failed or broke mid-body. Both SDKs send over httpx2, whose transport errors
    reach a stream's reader unwrapped once the response has begun."""
    return isinstance(error, (sdk.APIConnectionError, httpx2.TransportError)) \
        and not isinstance(error, sdk.APITimeoutError)


def translate_openai_error(model: str, error: Exception) -> ServiceError:
    return translate_sdk_error(openai, "openai", model, error)


def retry_after_seconds(headers: object) -> float | None:
    value = getattr(headers, "get", lambda _: None)("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
