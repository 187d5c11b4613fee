"""User ids belong to the API key's tenant: each key is its own tenant unless keys are configured
to share one (`tenant:` on a key). A tenant's keys see and spend only their tenant's users: ledger
records, budgets and per-user rate limits. Admin keys read across tenants. A request that names no
user is kept out of the user namespace (a user named "anonymous" is a user like any other)."""

from __future__ import annotations

from typing import Any

import pytest_asyncio

from router.http.auth import hash_key
from tests.fakes.inprocess import ADMIN_KEY, KEY, InProcess, config, start

MOBILE_KEY = "lx_mobile-key-0123456789"
PARTNER_KEY = "lx_partner-key-0123456789"
KEYS = [{"id": "backend", "sha256": hash_key(KEY)},
        {"id": "mobile-app", "sha256": hash_key(MOBILE_KEY)},
        {"id": "partner", "sha256": hash_key(PARTNER_KEY), "tenant": "backend"},
        {"id": "ops", "sha256": hash_key(ADMIN_KEY), "role": "admin"}]
HELLO = [{"role": "user", "content": "Hello there"}]


def as_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def tenants(tmp_path: Any, **overrides: Any) -> InProcess:
    return start(config(tmp_path, auth={"api_keys": KEYS}, **overrides))


@pytest_asyncio.fixture(loop_scope="function")
async def api(tmp_path: Any) -> Any:
    running = await tenants(tmp_path)
    yield running
    await running.close()


async def chat(api: InProcess, key: str, user: str | None, **headers: str) -> int:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": HELLO}
    if user is not None:
        body["user"] = user
    response = await api.post("/v1/chat/completions", body, headers={**as_key(key), **headers})
    return response.status_code


async def records(api: InProcess, key: str, user: str) -> list[dict[str, Any]]:
    response = await api.client.get("/api/v1/ai/usage/records", params={"user_id": user},
                                    headers=as_key(key))
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["records"]
    return found


async def usage(api: InProcess, key: str, user: str) -> dict[str, Any]:
    response = await api.client.get("/api/v1/ai/usage", params={"user_id": user},
                                    headers=as_key(key))
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_a_key_reads_only_its_tenants_users(api: InProcess) -> None:
    assert await chat(api, KEY, "learner-7", **{"Idempotency-Key": "a-secret-idem-key"}) == 200
    await api.records()  # written
    assert await records(api, MOBILE_KEY, "learner-7") == []
    assert (await usage(api, MOBILE_KEY, "learner-7"))["totals"]["requests"] == 0
    (mine,) = await records(api, KEY, "learner-7")
    assert mine["idempotency_key"] == "a-secret-idem-key"
    assert (await usage(api, KEY, "learner-7"))["totals"]["requests"] == 1


async def test_keys_configured_with_one_tenant_share_its_users(api: InProcess) -> None:
    assert await chat(api, KEY, "learner-7") == 200
    assert await chat(api, PARTNER_KEY, "learner-7") == 200
    await api.records()
    assert [r["api_key_id"] for r in await records(api, PARTNER_KEY, "learner-7")] == \
        ["partner", "backend"]
    assert len(await records(api, KEY, "learner-7")) == 2


async def test_an_admin_key_reads_across_tenants(api: InProcess) -> None:
    assert await chat(api, KEY, "learner-7") == 200
    assert await chat(api, MOBILE_KEY, "learner-7") == 200
    await api.records()
    assert sorted(r["api_key_id"] for r in await records(api, ADMIN_KEY, "learner-7")) == \
        ["backend", "mobile-app"]
    assert (await usage(api, ADMIN_KEY, "learner-7"))["totals"]["requests"] == 2


async def test_budgets_are_per_tenant(tmp_path: Any) -> None:
    api = await tenants(tmp_path, budgets={"default": {"daily_usd": 1.0}})
    try:
        assert await chat(api, KEY, "learner-7") == 200
        await api.services.accounting.drain()
        spent = (await usage(api, KEY, "learner-7"))["budget"]["daily_spent_usd"]
        assert spent > 0
        assert (await usage(api, MOBILE_KEY, "learner-7"))["budget"]["daily_spent_usd"] == 0
        assert (await usage(api, PARTNER_KEY, "learner-7"))["budget"]["daily_spent_usd"] == spent
    finally:
        await api.close()


async def test_per_user_rate_limits_are_per_tenant(tmp_path: Any) -> None:
    api = await tenants(tmp_path, rate_limits={"user_requests_per_minute": 1})
    try:
        assert await chat(api, KEY, "learner-7") == 200
        assert await chat(api, PARTNER_KEY, "learner-7") == 429  # the same tenant's user
        assert await chat(api, MOBILE_KEY, "learner-7") == 200
    finally:
        await api.close()


async def test_a_user_named_anonymous_does_not_escape_the_default_budget(tmp_path: Any) -> None:
    api = await tenants(tmp_path, budgets={"default": {"daily_usd": 0.000001,
                                                       "on_exhausted": "refuse"}})
    try:
        assert await chat(api, KEY, "learner-1") == 402
        assert await chat(api, KEY, "anonymous") == 402
        assert await chat(api, KEY, None) == 200  # no user: only a budget named anonymous
        await api.records()
        assert await records(api, KEY, "anonymous") != []  # its own rows, not unnamed traffic
        assert all(r["user_id"] == "anonymous" for r in await records(api, KEY, "anonymous"))
        assert len(await records(api, KEY, "anonymous")) == 1
    finally:
        await api.close()
