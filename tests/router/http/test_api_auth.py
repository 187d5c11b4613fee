"""Service API keys on every route, rate limits with Retry-After, and request size limits."""

from __future__ import annotations

import httpx
import pytest

from router.http.auth import OPEN_PATHS
from router.http.routes import routes
from tests.conftest import AUTH, LIMITED_KEY, LIMITED_RPM

ROUTES = sorted({(method, route.path) for route in routes.routes for method in route.methods}
                | {("GET", "/openapi.json"), ("GET", "/docs")})


def call(url: str, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = {} if method == "POST" else None  # an empty body: a 400 once past auth, never a model run
    return httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=30,
                         params={"user_id": "auth-probe"})


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_but_health_needs_a_valid_key(serve_url, method: str, path: str) -> None:
    missing = call(serve_url, method, path, {})
    wrong = call(serve_url, method, path, {"Authorization": "Bearer lx_not-a-key"})
    right = call(serve_url, method, path, AUTH)
    if path in OPEN_PATHS:
        assert missing.status_code == wrong.status_code == right.status_code == 200
        return
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert wrong.json()["error"] == {"type": "authentication_error", "message": "invalid API key",
                                     "code": "invalid_api_key", "param": None}
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code not in (401, 500), right.text


def test_a_key_also_works_as_x_api_key(serve_url) -> None:
    response = httpx.get(f"{serve_url}/v1/models", headers={"X-API-Key": AUTH["Authorization"][7:]})
    assert response.status_code == 200


def test_the_dev_profile_lets_anyone_in(lite_url) -> None:
    assert httpx.get(f"{lite_url}/v1/models", timeout=30).status_code == 200


def test_a_burst_over_the_keys_rate_gets_429_with_retry_after(serve_url) -> None:
    headers = {"Authorization": f"Bearer {LIMITED_KEY}"}
    statuses, limited = [], None
    for n in range(LIMITED_RPM + 3):
        response = httpx.post(f"{serve_url}/api/v1/ai/embeddings", headers=headers, timeout=60,
                              json={"texts": [f"burst {n}"], "user_id": "burst"})
        statuses.append(response.status_code)
        if response.status_code == 429:
            limited = response
    assert statuses == [200] * LIMITED_RPM + [429] * 3
    assert limited is not None and 1 <= int(limited.headers["retry-after"]) <= 60
    error = limited.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert f"key 'limited': {LIMITED_RPM} requests per minute" in error["message"]


def test_too_many_messages_is_a_422(serve_url) -> None:
    messages = [{"role": "user", "content": "hi"}] * 257
    response = httpx.post(f"{serve_url}/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "small", "messages": messages})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "limit_exceeded"
    assert "257 messages" in response.json()["error"]["message"]


def test_a_body_over_the_size_limit_is_a_413(serve_url) -> None:
    response = httpx.post(f"{serve_url}/api/v1/ai/embeddings", headers=AUTH, timeout=30,
                          json={"texts": ["x" * 250_000]})
    assert response.status_code == 413
    assert "larger than 200000 bytes" in response.json()["error"]["message"]


def test_a_chunked_body_over_the_size_limit_is_a_413_through_the_ingress(serve_url) -> None:
    def body():
        yield b'{"texts": ["'
        for _ in range(250):
            yield b"x" * 1000
        yield b'"]}'

    response = httpx.post(f"{serve_url}/api/v1/ai/embeddings", content=body(), timeout=30,
                          headers={**AUTH, "content-type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert "larger than 200000 bytes" in response.json()["error"]["message"]
