"""Priority tiers in process (core/tiers.py): a request's tier reaches the local engine as its
priority, is bounded by its key, chooses its spill-over wait and is in the ledger."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from core.config import ApiKeyConfig, RouterConfig
from router.http.auth import hash_key
from tests.fakes.inprocess import KEY, LOCAL, InProcess, config, start

LESSON = {"role": "user", "content": "Explain photosynthesis."}
EXAM_KEY = "lx_inprocess-exam-0123456789"
KEYS = {"api_keys": [
    {"id": "backend", "sha256": hash_key(KEY)},
    {"id": "exams", "sha256": hash_key(EXAM_KEY), "max_tier": "assessment"},
    {"id": "batch", "sha256": hash_key("lx_inprocess-batch-0123456789"), "tier": "background"}]}
# Each generating route, with a body that runs on the local model.
ROUTES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "small", "messages": [LESSON], "max_tokens": 8},
    "/v1/completions": {"model": "small", "prompt": "Plants", "max_tokens": 8},
    "/v1/responses": {"model": "small", "input": "Explain it", "max_output_tokens": 16},
    "/api/v1/ai/generate-content": {  # in the learner's words: never a kept artifact
        "content": "Plants make sugar.", "content_type": "explanation", "stream": False,
        "preferred_providers": ["local"], "persona": "A learner who likes maps."},
}


def small(**extra: Any) -> dict[str, Any]:
    return {"model": "small", "messages": [LESSON], "max_tokens": 8, "user": "learner-1", **extra}


@pytest.fixture
async def school(tmp_path: Any) -> Any:
    app = start(config(tmp_path, auth=KEYS))
    yield app
    await app.close()


@pytest.mark.parametrize("path", ROUTES)
async def test_each_route_sends_its_tier_to_the_engine_as_priority(api: InProcess,
                                                                   path: str) -> None:
    default = await api.post(path, ROUTES[path])
    background = await api.post(path, {**ROUTES[path], "tier": "background"})
    assert (default.status_code, background.status_code) == (200, 200)
    assert [p.priority for p in api.engine.params] == [1, 0]


async def test_the_ledger_says_the_tier(api: InProcess) -> None:
    await api.post("/v1/chat/completions", small(tier="background"))
    await api.post("/v1/chat/completions", small())
    assert [r["tier"] for r in await api.records("learner-1")] == ["background", "interactive"]


async def test_a_tier_above_the_keys_maximum_is_a_403_naming_tier(api: InProcess) -> None:
    refused = await api.post("/v1/chat/completions", small(tier="assessment"))
    assert refused.status_code == 403
    assert refused.json()["error"] | {"message": ""} == {
        "message": "", "type": "permission_error", "code": "tier_not_allowed", "param": "tier"}
    assert api.engine.generations == 0
    (record,) = await api.records("learner-1")
    assert (record["outcome"], record["status"], record["tier"]) == ("error", 403, "interactive")


async def test_a_key_granted_assessment_goes_first(school: InProcess) -> None:
    exam = await school.post("/v1/chat/completions", small(tier="assessment"),
                             headers={"X-API-Key": EXAM_KEY})
    assert exam.status_code == 200
    assert school.engine.params[-1].priority == 2
    assert (await school.records("learner-1"))[-1]["tier"] == "assessment"


async def test_a_keys_default_tier_applies_to_requests_naming_none(school: InProcess) -> None:
    batch = await school.post("/v1/chat/completions", small(),
                              headers={"X-API-Key": "lx_inprocess-batch-0123456789"})
    assert batch.status_code == 200
    assert school.engine.params[-1].priority == 0
    assert (await school.records("learner-1"))[-1]["tier"] == "background"


async def test_under_load_background_spills_first_and_assessment_never(school: InProcess) -> None:
    school.engine.expected_wait_s = 1.0  # past background's 0.5 s, within interactive's 2 s
    background = await school.post("/v1/chat/completions", small(tier="background"))
    interactive = await school.post("/v1/chat/completions", small())
    assert background.headers["x-learnx-route"].startswith(("openai/", "anthropic/"))
    assert interactive.headers["x-learnx-route"] == f"local/{LOCAL}"

    school.engine.expected_wait_s = 9.0  # past interactive's too: only an assessment waits
    spilled = await school.post("/v1/chat/completions", small())
    exam = await school.post("/v1/chat/completions", small(tier="assessment"),
                             headers={"X-API-Key": EXAM_KEY})
    assert spilled.headers["x-learnx-route"].startswith(("openai/", "anthropic/"))
    assert exam.headers["x-learnx-route"] == f"local/{LOCAL}"


async def test_the_engine_shares_its_slots_by_the_callers_tenant(school: InProcess) -> None:
    for key in (KEY, EXAM_KEY):
        assert (await school.post("/v1/chat/completions", small(),
                                  headers={"X-API-Key": key})).status_code == 200
    assert [p.group for p in school.engine.params] == ["backend", "exams"]


def test_one_spill_over_wait_sets_every_tier() -> None:
    waits = RouterConfig.model_validate({"spill_over_wait_s": 3.0}).spill_over_wait_s
    assert (waits.of("assessment"), waits.of("interactive"), waits.of("background")) == (3.0,) * 3
    off = RouterConfig.model_validate({"spill_over_wait_s": None}).spill_over_wait_s
    assert off.of("background") is None
    default = RouterConfig().spill_over_wait_s
    assert (default.of("assessment"), default.of("interactive"), default.of("background")) == (
        None, 2.0, 0.5)


def test_a_keys_default_tier_cannot_exceed_its_maximum() -> None:
    with pytest.raises(ValidationError, match="above max_tier"):
        ApiKeyConfig.model_validate({"id": "k", "sha256": "0" * 64, "tier": "assessment"})
