"""Key roles: a service key calls the AI API and reads usage one user at a time; an admin key also
reads every user's usage and resets breakers. Roles come from the config or LEARNX_API_KEYS."""

from __future__ import annotations

import pytest
import yaml

from core.config import ApiKeyConfig, load_config
from core.env import ConfigError
from router.http.auth import KeyRing, new_key
from tests.fakes.inprocess import ADMIN_KEY, KEY, InProcess

HELLO = [{"role": "user", "content": "Hello there"}]
SERVICE = {"X-API-Key": KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}


async def test_a_service_key_calls_the_api_and_reads_one_users_usage(api: InProcess) -> None:
    chat = await api.post("/v1/chat/completions", {"model": "small", "messages": HELLO,
                                                   "user": "ada"}, headers=SERVICE)
    assert chat.status_code == 200
    usage = await api.client.get("/api/v1/ai/usage", params={"user_id": "ada"}, headers=SERVICE)
    assert usage.status_code == 200 and usage.json()["totals"]["requests"] == 1
    records = await api.client.get("/api/v1/ai/usage/records", params={"user_id": "ada"},
                                   headers=SERVICE)
    assert records.status_code == 200


@pytest.mark.parametrize(("method", "path", "needs"), [
    ("GET", "/api/v1/ai/usage", "reading the usage of all users"),
    ("GET", "/v1/usage", "reading the usage of all users"),
    ("POST", "/health/providers/reset", "resetting the circuit breakers"),
    ("POST", "/api/v1/ai/health/providers/reset", "resetting the circuit breakers"),
])
async def test_operator_routes_refuse_a_service_key_and_serve_an_admin_key(
        api: InProcess, method: str, path: str, needs: str) -> None:
    refused = await api.client.request(method, path, headers=SERVICE)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "admin_key_required")
    assert needs in error["message"] and "'backend' is a service key" in error["message"]
    allowed = await api.client.request(method, path, headers=ADMIN)
    assert allowed.status_code == 200, allowed.text


async def test_an_admin_key_calls_the_api_too(api: InProcess) -> None:
    chat = await api.post("/v1/chat/completions", {"model": "small", "messages": HELLO},
                          headers=ADMIN)
    assert chat.status_code == 200
    assert (await api.records())[0]["api_key_id"] == "ops"


def test_keys_are_service_keys_unless_configured_as_admin() -> None:
    sha = "a" * 64
    config = load_config({}, environ={"LEARNX_API_KEYS": f"node:{sha}, ops:{'b' * 64}:admin"})
    assert [(k.id, k.role) for k in config.auth.api_keys] == [("node", "service"), ("ops", "admin")]
    with pytest.raises(ConfigError, match=r"LEARNX_API_KEYS=.*id:sha256:admin for an admin key"):
        load_config({}, environ={"LEARNX_API_KEYS": f"node:{sha}:root"})


def test_new_key_can_make_an_admin_key() -> None:
    key, entry = new_key("ops", "admin")
    (config,) = yaml.safe_load(entry)
    assert KeyRing([ApiKeyConfig(**config)]).identify(key).role == "admin"  # type: ignore[union-attr]
    _, service = new_key("node")
    assert "role" not in service
