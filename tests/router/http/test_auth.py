"""Service API keys: hashed keys, Bearer or X-API-Key, 401 in the error shape, open health routes."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from core.config import ApiKeyConfig, AuthConfig
from router.http.auth import (
    ApiKeyAuth,
    ExposedWithoutAuth,
    KeyRing,
    check_exposure,
    hash_key,
    new_key,
    presented_key,
)

BACKEND_KEY = "lx_backend-key-0123456789"
WORKER_KEY = "lx_worker-key-0123456789"
KEYS = [ApiKeyConfig(id="backend", sha256=hash_key(BACKEND_KEY), requests_per_minute=30),
        ApiKeyConfig(id="worker", sha256=hash_key(WORKER_KEY))]


async def whoami(request: Request) -> JSONResponse:
    key: ApiKeyConfig = request.scope["state"]["api_key"]
    return JSONResponse({"key": key.id, "requests_per_minute": key.requests_per_minute})


def client(config: AuthConfig, root_path: str = "") -> httpx.AsyncClient:
    paths = ("/v1/chat/completions", "/health", "/ready", "/health/providers/reset")
    routes = [Route(path, whoami, methods=["GET", "POST"]) for path in paths]
    app = ApiKeyAuth(Starlette(routes=routes), config)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, root_path=root_path),
                             base_url="http://router")


def scope_with(*headers: tuple[str, str]) -> dict:
    return {"type": "http", "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}


def test_hash_key_is_the_sha256_hex_digest() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_key(BACKEND_KEY) == hashlib.sha256(BACKEND_KEY.encode()).hexdigest()


def test_identify_finds_the_matching_key_among_several() -> None:
    ring = KeyRing(KEYS)
    assert ring.identify(WORKER_KEY) == KEYS[1]
    assert ring.identify(BACKEND_KEY) == KEYS[0]


def test_identify_returns_none_for_an_unknown_key() -> None:
    ring = KeyRing(KEYS)
    assert ring.identify("lx_not-a-key") is None
    assert ring.identify(BACKEND_KEY + " ") is None
    assert ring.identify(hash_key(BACKEND_KEY)) is None  # the hash itself is not a key


def test_presented_key_reads_bearer_or_x_api_key() -> None:
    assert presented_key(scope_with(("Authorization", f"Bearer {WORKER_KEY}"))) == WORKER_KEY
    assert presented_key(scope_with(("Authorization", f"bearer  {WORKER_KEY} "))) == WORKER_KEY
    assert presented_key(scope_with(("X-API-Key", WORKER_KEY))) == WORKER_KEY


def test_presented_key_prefers_bearer_and_ignores_other_schemes() -> None:
    both = scope_with(("Authorization", f"Bearer {BACKEND_KEY}"), ("X-API-Key", WORKER_KEY))
    assert presented_key(both) == BACKEND_KEY
    basic = scope_with(("Authorization", "Basic dXNlcjpwYXNz"), ("X-API-Key", WORKER_KEY))
    assert presented_key(basic) == WORKER_KEY
    assert presented_key(scope_with(("Authorization", "Basic dXNlcjpwYXNz"))) is None
    assert presented_key(scope_with(("Authorization", "Bearer "), ("X-API-Key", " "))) is None


def test_a_new_key_and_its_config_entry_admit_each_other() -> None:
    key, entry = new_key("reports")
    (config,) = yaml.safe_load(entry)
    assert key.startswith("lx_") and key not in entry
    assert KeyRing([ApiKeyConfig(**config)]).identify(key) == ApiKeyConfig(id="reports",
                                                                          sha256=hash_key(key))


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {BACKEND_KEY}"},
                                     {"X-API-Key": BACKEND_KEY}], ids=["bearer", "x-api-key"])
async def test_a_valid_key_reaches_the_app_with_its_config(headers: dict[str, str]) -> None:
    async with client(AuthConfig(api_keys=KEYS)) as http:
        response = await http.post("/v1/chat/completions", headers=headers)
    assert response.status_code == 200
    assert response.json() == {"key": "backend", "requests_per_minute": 30}


async def test_a_missing_key_is_refused_with_401_in_the_error_shape() -> None:
    async with client(AuthConfig(api_keys=KEYS)) as http:
        response = await http.post("/v1/chat/completions")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "missing_api_key")
    assert "Authorization: Bearer" in error["message"]


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer lx_wrong"}, {"X-API-Key": "lx_wrong"}],
                         ids=["bearer", "x-api-key"])
async def test_a_wrong_key_is_refused_as_invalid(headers: dict[str, str]) -> None:
    async with client(AuthConfig(api_keys=KEYS)) as http:
        response = await http.post("/v1/chat/completions", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert "lx_wrong" not in response.text


@pytest.mark.parametrize("root_path", ["", "/lite"])
async def test_liveness_and_readiness_are_open(root_path: str) -> None:
    async with client(AuthConfig(api_keys=KEYS), root_path=root_path) as http:
        for path in ("/health", "/ready"):
            response = await http.get(root_path + path)
            assert response.status_code == 200, path


async def test_only_the_exact_health_paths_are_open() -> None:
    async with client(AuthConfig(api_keys=KEYS)) as http:
        response = await http.get("/health/providers/reset")
    assert response.status_code == 401


async def test_with_auth_disabled_anyone_is_let_in_as_dev() -> None:
    async with client(AuthConfig(enabled=False)) as http:
        anonymous = await http.post("/v1/chat/completions")
        wrong = await http.post("/v1/chat/completions", headers={"X-API-Key": "lx_wrong"})
    assert anonymous.status_code == wrong.status_code == 200
    assert anonymous.json()["key"] == wrong.json()["key"] == "dev"


def test_auth_enabled_without_keys_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="no api_keys are configured"):
        AuthConfig(enabled=True)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", None])
def test_auth_off_is_refused_beyond_loopback(host: str | None) -> None:
    with pytest.raises(ExposedWithoutAuth, match=r"set http_options\.host: 127\.0\.0\.1"):
        check_exposure(AuthConfig(enabled=False), host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_auth_off_is_allowed_on_loopback(host: str) -> None:
    check_exposure(AuthConfig(enabled=False), host)


def test_auth_on_may_listen_anywhere() -> None:
    check_exposure(AuthConfig(api_keys=[ApiKeyConfig(id="k", sha256="0" * 64)]), "0.0.0.0")


async def test_a_websocket_without_a_key_is_closed_before_the_app_sees_it() -> None:
    reached: list[str] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["state"]["api_key"].id)

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    auth = ApiKeyAuth(app, AuthConfig(api_keys=KEYS))
    scope = {"type": "websocket", "path": "/v1/realtime", "headers": []}
    await auth(scope, receive, send)
    assert (reached, sent) == ([], [{"type": "websocket.close", "code": 1008}])
    await auth({**scope, "headers": [(b"x-api-key", WORKER_KEY.encode())]}, receive, send)
    assert reached == ["worker"]


async def test_lifespan_passes_through() -> None:
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        return None

    await ApiKeyAuth(app, AuthConfig(api_keys=KEYS))({"type": "lifespan"}, receive, send)
    assert reached == ["lifespan"]
