"""Each validated artifact once per class, in process (router/services/artifacts.py): identical
generate-content requests of one tenant cost one generation; the rest replay it, billed 0."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from content.profile import LearnerProfile
from content.schemas import validate
from router.http.auth import hash_key
from router.services.artifacts import MemoryArtifacts, artifact_key
from router.services.content import ContentService
from router.services.singleflight import Event
from router.wire.learnx import GenerateContentRequest
from tests.conftest import RedisServer
from tests.fakes.inprocess import KEY, InProcess, config, start

OTHER_SCHOOL = "lx_inprocess-other-school-0123456789"
KEYS = {"api_keys": [{"id": "backend", "sha256": hash_key(KEY)},
                     {"id": "other", "tenant": "other-school", "sha256": hash_key(OTHER_SCHOOL)}]}
LESSON = "Photosynthesis: plants use light, water and carbon dioxide to make sugar."


def quiz(**extra: Any) -> dict[str, Any]:
    return {"content": LESSON, "content_type": "quiz", "stream": False,
            "preferred_providers": ["local"], "persona": "visual", **extra}


@pytest.fixture
async def school(tmp_path: Any) -> AsyncIterator[InProcess]:
    app = start(config(tmp_path, auth=KEYS))
    yield app
    await app.close()


async def ask(app: InProcess, body: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    response = await app.post("/api/v1/ai/generate-content", body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_class_of_30_costs_one_generation(school: InProcess) -> None:
    answers = [await ask(school, quiz(user_id=f"learner-{n}")) for n in range(30)]
    assert school.engine.generations == 1
    assert all(validate("quiz", json.dumps(a["data"]))[0] == answers[0]["data"] for a in answers)
    assert [a["metadata"].get("cached", False) for a in answers] == [False] + [True] * 29
    assert all(a["metadata"]["billed_usd"] == 0 for a in answers[1:])
    records = await school.records()
    assert [r["outcome"] for r in records] == ["success"] + ["cached"] * 29
    assert all(r["cost_usd"] == 0 and r["input_tokens"] == 0 for r in records[1:])


async def test_a_class_asking_at_once_shares_one_run(school: InProcess) -> None:
    answers = await asyncio.gather(*(ask(school, quiz(user_id=f"learner-{n}"))
                                     for n in range(30)))
    assert school.engine.generations == 1
    assert all(a["data"] == answers[0]["data"] for a in answers)
    outcomes = sorted(r["outcome"] for r in await school.records())
    assert outcomes.count("success") == 1 and len(outcomes) == 30


class MissesOnce(MemoryArtifacts):
    """A store whose next lookup misses once `stale` is set: as if the run that keeps the artifact
    ended while the request that looked was being admitted."""

    stale = False

    async def get(self, key: str) -> list[Event] | None:
        if self.stale:
            self.stale = False
            return None
        return await super().get(key)


async def test_a_run_that_ended_while_a_request_was_admitted_is_replayed(
        school: InProcess) -> None:
    store = MissesOnce(max_items=10, ttl_s=60)
    school.services.content = ContentService(school.services.chat, store)
    await ask(school, quiz(user_id="learner-1"))
    store.stale = True
    late = await ask(school, quiz(user_id="learner-2"))
    assert late["metadata"]["cached"] is True and late["metadata"]["billed_usd"] == 0
    assert school.engine.generations == 1
    assert [r["outcome"] for r in await school.records()] == ["success", "cached"]


async def test_another_tenant_does_not_hit(school: InProcess) -> None:
    await ask(school, quiz())
    other = await ask(school, quiz(), key=OTHER_SCHOOL)
    assert "cached" not in other["metadata"]
    assert school.engine.generations == 2


async def test_classes_of_a_school_share_unless_scoped_to_the_group(tmp_path: Any) -> None:
    for scope, generations in (("tenant", 1), ("group", 2)):
        app = start(config(tmp_path / scope, auth=KEYS, artifacts={"scope": scope}))
        try:
            first = await ask(app, quiz(group_id="class-a", user_id="learner-1"))
            same = await ask(app, quiz(group_id="class-a", user_id="learner-2"))
            other = await ask(app, quiz(group_id="class-b", user_id="learner-3"))
            assert "cached" not in first["metadata"] and same["metadata"]["cached"] is True
            assert other["metadata"].get("cached", False) is (scope == "tenant")
            assert app.engine.generations == generations
        finally:
            await app.close()


async def test_a_request_naming_no_group_shares_the_tenants_artifacts(tmp_path: Any) -> None:
    app = start(config(tmp_path, auth=KEYS, artifacts={"scope": "group"}))
    try:
        await ask(app, quiz())
        assert (await ask(app, quiz()))["metadata"]["cached"] is True
        assert "cached" not in (await ask(app, quiz(group_id="class-a")))["metadata"]
        assert app.engine.generations == 2
    finally:
        await app.close()


async def test_another_difficulty_or_learning_style_misses(school: InProcess) -> None:
    await ask(school, quiz())
    await ask(school, quiz(difficulty="advanced"))
    await ask(school, quiz(persona="step_by_step"))
    assert school.engine.generations == 3
    await ask(school, quiz(difficulty="advanced"))
    assert school.engine.generations == 3


async def test_a_learner_in_their_own_words_is_not_cached(school: InProcess) -> None:
    described = quiz(persona="A visual learner in grade 7 who loves football.")
    await ask(school, described)
    again = await ask(school, described)
    assert "cached" not in again["metadata"]
    assert school.engine.generations == 2


async def test_an_explanation_that_finished_is_kept(school: InProcess) -> None:
    explain = quiz(content_type="explanation")
    await ask(school, explain)
    replayed = await ask(school, explain)
    assert replayed["metadata"]["cached"] is True and replayed["content"]
    assert school.engine.generations == 1


async def test_an_explanation_cut_at_max_tokens_is_not_kept(school: InProcess) -> None:
    school.engine.text = " ".join(["word"] * 40)  # longer than max_tokens: "length"
    cut = quiz(content_type="explanation", max_tokens=16)
    await ask(school, cut)
    again = await ask(school, cut)
    assert again["metadata"]["finish_reason"] == "length" and "cached" not in again["metadata"]
    assert school.engine.generations == 2


def test_the_key_is_exact_and_names_the_template_version() -> None:
    request = GenerateContentRequest.model_validate(quiz())
    profile = request.profile()
    key = artifact_key(request, profile, 3, "school")
    assert key == artifact_key(request, profile, 3, "school")
    assert key != artifact_key(request, profile, 3, "school", template="2099-01-01.1")
    assert key != artifact_key(request, profile, 4, "school")
    assert key != artifact_key(request, profile, 3, "another-school")
    assert artifact_key(request, LearnerProfile(interests=["football"]), 3, "school") is None


async def test_memory_artifacts_expire_and_stay_bounded() -> None:
    now = [0.0]
    store = MemoryArtifacts(max_items=2, ttl_s=10, clock=lambda: now[0])
    for key in "abc":
        await store.put(key, [{"type": "done", "content": key, "metadata": {}}])
    assert await store.get("a") is None  # the oldest left
    assert await store.get("c") is not None
    now[0] = 11.0
    assert await store.get("c") is None


async def test_artifacts_in_redis_are_shared_by_replicas(tmp_path: Any,
                                                         own_redis: RedisServer) -> None:
    apps = [start(config(tmp_path / name, auth=KEYS, redis_url=own_redis.url))
            for name in ("a", "b")]
    lesson = quiz(content=f"{LESSON} ({uuid.uuid4()})")  # this test's own key
    try:
        await ask(apps[0], lesson)
        replayed = await ask(apps[1], lesson)
        assert replayed["metadata"]["cached"] is True
        assert (apps[0].engine.generations, apps[1].engine.generations) == (1, 0)
        assert [r["outcome"] for r in await apps[1].records()] == ["cached"]
    finally:
        for app in apps:
            await app.close()
