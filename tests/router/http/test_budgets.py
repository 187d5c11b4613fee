"""Budget levels through the API, in process: a request names its group (`group`, or `group_id`
beside the seed's `user_id`), the ledger records it, and the 402 says which level and period
refused; the admin API creates, changes, reads and removes a tenant's, a group's and a user's
budget (admin keys only); the usage API answers per group and per level."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import pytest_asyncio

from core.generation import TokenUsage
from tests.fakes.inprocess import ADMIN_KEY, InProcess, config, start
from tests.fakes.scripted import Say

HELLO = [{"role": "user", "content": "Hello there"}]
ADMIN = {"X-API-Key": ADMIN_KEY}
GROUP = "/api/v1/ai/budgets/backend/groups/class-7a"
TINY = 0.000001


@pytest_asyncio.fixture(loop_scope="function")
async def school(tmp_path: Any):
    running = start(config(tmp_path, budgets={"levels": [
        {"tenant": "backend", "usd": 100, "period": "term", "start": "2020-01-01",
         "end": "2099-12-31"},
        {"tenant": "backend", "group": "class-7a", "usd": TINY, "period": "week",
         "on_exhausted": "refuse"},
        {"tenant": "backend", "group": "class-7b", "usd": TINY}]}))
    yield running
    await running.close()


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": HELLO, **fields}


async def test_a_402_names_the_level_and_the_period(school: InProcess) -> None:
    response = await school.post("/v1/chat/completions", chat(user="ada", group="class-7a"))
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert (error["type"], error["level"], error["period"]) == ("budget_exceeded", "group", "week")
    assert "group 'class-7a'" in error["message"]
    (record,) = await school.records("ada")
    assert (record["group_id"], record["status"]) == ("class-7a", 402)


async def test_a_level_that_downgrades_says_so_in_the_route(school: InProcess) -> None:
    response = await school.post("/v1/chat/completions", chat(user="ada", group="class-7b"))
    route = response.json()["route"]
    assert route["provider"] == "local"
    assert "budget exhausted (group 'class-7b')" in route["reason"]


async def test_every_route_names_its_group(school: InProcess) -> None:
    bodies = [("/v1/completions", {"model": "smollm2-135m", "prompt": "Hi", "user": "bea",
                                   "group": "class-9", "max_tokens": 8}),
              ("/v1/responses", {"model": "smollm2-135m", "input": "Hi", "user": "bea",
                                 "group": "class-9"}),
              ("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "Hi", "user": "bea",
                                  "group": "class-9"}),
              ("/api/v1/ai/embeddings", {"texts": ["Hi"], "user_id": "bea", "group_id": "class-9"}),
              ("/api/v1/ai/generate-content", {"content": "Plants make sugar.", "stream": False,
                                               "content_type": "explanation", "user_id": "bea",
                                               "group_id": "class-9", "model": "smollm2-135m"})]
    for path, body in bodies:
        response = await school.post(path, body)
        assert response.status_code == 200, (path, response.text)
    records = await school.records("bea")
    assert [r["group_id"] for r in records] == ["class-9"] * len(bodies)


async def test_hosted_embeddings_over_a_level_are_refused_naming_it(school: InProcess) -> None:
    response = await school.post("/v1/embeddings", {
        "model": "text-embedding-3-small", "input": "x " * 2000, "user": "ada",
        "group": "class-7a"})
    assert response.status_code == 402, response.text
    assert response.json()["error"]["level"] == "group"


async def test_an_admin_key_sets_reads_and_removes_a_groups_budget(school: InProcess) -> None:
    response = await school.client.put(GROUP, json={"usd": 5, "period": "month"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["level"], view["source"], view["budget"]["usd"]) == ("group", "api", 5.0)
    school.openai.enqueue(Say("Hi!", usage=TokenUsage(1_000, 1_000)))
    response = await school.post("/v1/chat/completions", chat(user="ada", group="class-7a"))
    assert response.status_code == 200, response.text
    await school.services.accounting.drain()
    (status,) = (await school.client.get(GROUP, headers=ADMIN)).json()["status"]
    assert status["period"] == "month" and status["spent_usd"] == pytest.approx(0.00075)
    assert status["remaining_usd"] == pytest.approx(5 - 0.00075)
    removed = (await school.client.delete(GROUP, headers=ADMIN)).json()
    assert (removed["source"], removed["budget"]["usd"]) == ("config", TINY)  # the config's again
    again = await school.client.delete(GROUP, headers=ADMIN)
    assert again.status_code == 404 and "the config file's" in again.json()["error"]["message"]


async def test_budgets_are_managed_with_admin_keys_only(school: InProcess) -> None:
    for call in (school.client.get(GROUP), school.client.put(GROUP, json={"usd": 5}),
                 school.client.delete("/api/v1/ai/budgets/backend/users/ada")):
        response = await call
        assert response.status_code == 403, response.text


async def test_a_budget_that_cannot_be_is_a_400_naming_what_to_fix(school: InProcess) -> None:
    cases = [("/api/v1/ai/budgets/backend", {"usd": 5, "learner_cap_usd": 1}, "learner_cap_usd"),
             (GROUP, {"usd": 5, "period": "term"}, "start and end"),
             (GROUP, {"usd": -1}, "usd"),
             (GROUP, {"usd": 5, "weekly": 1}, "weekly")]
    for path, body, named in cases:
        response = await school.client.put(path, json=body, headers=ADMIN)
        assert response.status_code == 400, response.text
        assert named in response.json()["error"]["message"]


async def test_a_users_budget_and_a_tenants_are_levels_too(school: InProcess) -> None:
    user = "/api/v1/ai/budgets/backend/users/ada"
    assert (await school.client.get(user, headers=ADMIN)).status_code == 404
    response = await school.client.put(user, json={"usd": TINY, "period": "day",
                                                   "on_exhausted": "refuse"}, headers=ADMIN)
    assert response.json()["status"][0]["level"] == "user"
    refused = await school.post("/v1/chat/completions", chat(user="ada"))
    assert (refused.json()["error"]["level"], refused.json()["error"]["period"]) == ("user", "day")
    tenant = (await school.client.get("/api/v1/ai/budgets/backend", headers=ADMIN)).json()
    assert (tenant["source"], tenant["status"][0]["period"]) == ("config", "term")


async def test_the_usage_api_answers_per_group_and_per_level(school: InProcess) -> None:
    for group in ("class-9", "class-10"):
        assert (await school.post("/v1/chat/completions", chat(
            model="smollm2-135m", user="ada", group=group))).status_code == 200
    await school.services.accounting.drain()
    report = await usage(school.client, group="class-9")
    assert (report["group"], report["totals"]["requests"]) == ("class-9", 1)
    report = await usage(school.client, group="class-7a", user_id="ada")
    assert {b["level"] for b in report["budgets"]} == {"tenant", "group", "learner_share"}


async def usage(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/api/v1/ai/usage", params=params)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_a_budget_set_mid_period_counts_what_its_level_spent_before(school: InProcess) -> None:
    school.openai.enqueue(Say("Hi!", usage=TokenUsage(1_000, 1_000)))
    response = await school.post("/v1/chat/completions", chat(user="ada", group="class-9"))
    assert response.status_code == 200, response.text
    await school.records("ada")  # written to the ledger
    view = (await school.client.put("/api/v1/ai/budgets/backend/groups/class-9",
                                    json={"usd": 1, "period": "day"}, headers=ADMIN)).json()
    assert view["status"][0]["spent_usd"] == pytest.approx(0.00075)
