"""generate-content in process: events, structure, validation with repair and escalation, typed
failures, and single flight, over the fake engine and scripted hosted providers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from core.errors import ProviderError
from core.generation import GenerationParams
from router.usage.record import Operation
from router.wire.learnx import GenerateContentRequest
from tests.fakes.inprocess import InProcess, config, start
from tests.fakes.scripted import Cut, Hang, Say

MATERIAL = "Photosynthesis: plants use light, water and carbon dioxide to make sugar and oxygen."
QUIZ = {"questions": [{"question": "What do plants make?", "options": ["sugar", "salt", "iron",
                       "sand"], "answer_index": 0, "rationale": "Photosynthesis makes sugar."}]}


def events(text: str) -> list[dict]:
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


async def generate(api: InProcess, **body: object) -> list[dict]:
    response = await api.post("/api/v1/ai/generate-content",
                              {"content": MATERIAL, "stream": True, **body})
    assert response.status_code == 200, response.text
    return events(response.text)


async def test_text_content_streams_numbered_events_to_a_done_with_usage(api: InProcess) -> None:
    stream = await generate(api, content_type="explanation", model="smollm2-135m",
                            difficulty="beginner")
    assert [e["metadata"]["seq"] for e in stream] == list(range(1, len(stream) + 1))
    assert {e["type"] for e in stream[:-1]} == {"explanation"}
    done = stream[-1]
    assert done["type"] == "done"
    assert done["metadata"]["provider"] == "local" and done["metadata"]["difficulty"] == 1
    assert done["metadata"]["usage"]["completion_tokens"] == 6
    assert "".join(e["content"] for e in stream) == "The fake engine explains it well."


async def test_a_structured_type_is_validated_and_sent_item_by_item(api: InProcess) -> None:
    stream = await generate(api, content_type="quiz", model="smollm2-135m")
    done = stream[-1]
    assert done["type"] == "done" and done["metadata"]["repaired"] is False
    questions = [e for e in stream if e["type"] == "quiz"]
    assert [e["metadata"]["structure"] for e in questions] == [{"kind": "question", "question": 1}]
    assert json.loads(questions[0]["content"]) == done["metadata"]["data"]["questions"][0]


async def test_invalid_json_is_repaired_then_escalated_to_the_large_tier(api: InProcess) -> None:
    api.openai.enqueue(Say("Here is a quiz!"), Say('{"questions": []}'), Say(json.dumps(QUIZ)))
    response = await api.post("/api/v1/ai/generate-content", {
        "content": MATERIAL, "content_type": "quiz", "model": "gpt-4o-mini", "stream": False})
    body = response.json()
    assert response.status_code == 200, body
    assert body["data"] == QUIZ and body["metadata"]["repaired"] is True
    assert [model for model, _ in api.openai.calls] == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]
    assert "does not validate" in api.openai.calls[1][1].messages[-1]["content"]


async def test_when_nothing_validates_the_failure_is_a_typed_502(api: InProcess) -> None:
    api.openai.default = Say("nope")
    response = await api.post("/api/v1/ai/generate-content", {
        "content": MATERIAL, "content_type": "flashcards", "model": "gpt-4o-mini"})
    assert response.status_code == 502
    assert "no model produced valid flashcards JSON" in \
        response.json()["metadata"]["error"]["message"]


async def test_identical_requests_in_flight_share_one_run(api: InProcess) -> None:
    api.anthropic.default = Say("Plants catch light and make sugar.")
    body = {"content_type": "summary", "model": "claude-3-5-haiku-latest", "user_id": "class-7b"}
    streams = await asyncio.gather(*(generate(api, **body) for _ in range(5)))
    assert len(api.anthropic.calls) == 1
    terminals = [s[-1]["metadata"] for s in streams]
    assert sorted(t["single_flight"]["leader"] for t in terminals) == [False] * 4 + [True]
    assert sum(t["billed_usd"] for t in terminals) == terminals[0]["cost_usd"]
    outcomes = sorted(r["outcome"] for r in await api.records("class-7b"))
    assert outcomes == ["shared"] * 4 + ["success"]


async def test_a_bad_difficulty_is_a_400_naming_it(api: InProcess) -> None:
    response = await api.post("/api/v1/ai/generate-content", {
        "content": MATERIAL, "content_type": "summary", "difficulty": "expert"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "difficulty"


SUMMARY = {"content_type": "summary", "model": "claude-3-5-haiku-latest"}


async def test_identical_requests_of_different_users_do_not_share_a_run(api: InProcess) -> None:
    """Not when the learner's own words shape it (an artifact a tenant keeps is shared by its
    learners: tests/router/services/test_artifacts.py)."""
    streams = await asyncio.gather(*(generate(api, **SUMMARY, user_id=who,
                                              persona="A learner who likes maps.")
                                     for who in ("amy", "ben", "amy")))
    assert len(api.anthropic.calls) == 2
    assert [s[-1]["metadata"]["single_flight"]["shared"] for s in streams] == [False, False, True]


def one_request_budget(api: InProcess, on_exhausted: str) -> dict[str, object]:
    """A daily budget that covers one summary on claude-3-5-haiku, not two at once."""
    content = api.services.content
    prepared = content.prepare(GenerateContentRequest(content=MATERIAL, **SUMMARY))
    text_run = GenerationParams(prepared.messages, 700)  # a summary's default max_tokens
    routes = api.services.chat.plan(SUMMARY["model"], [], text_run)
    return {"daily_usd": routes[0].candidate.estimated_cost * 1.5, "on_exhausted": on_exhausted}


@pytest_asyncio.fixture(loop_scope="function")
async def budgeted(tmp_path: Any) -> AsyncIterator[InProcess]:
    probe = start(config(tmp_path / "probe"))
    budgets = {"users": {"strict": one_request_budget(probe, "refuse"),
                         "thrifty": one_request_budget(probe, "downgrade")}}
    await probe.close()
    running = start(config(tmp_path, budgets=budgets))
    yield running
    await running.close()


async def test_a_request_that_would_join_is_refused_by_its_own_budget(budgeted: InProcess) -> None:
    first, second = await asyncio.gather(*(
        budgeted.post("/api/v1/ai/generate-content", {
            "content": MATERIAL, **SUMMARY, "user_id": "strict", "stream": False})
        for _ in range(2)))
    assert first.status_code == 200, first.text
    assert second.status_code == 402, second.text
    assert "'strict'" in second.json()["error"]["message"]
    assert len(budgeted.anthropic.calls) == 1
    statuses = sorted(r["status"] for r in await budgeted.records("strict"))
    assert statuses == [200, 402]


async def test_a_request_its_budget_downgrades_runs_on_its_own(budgeted: InProcess) -> None:
    streams = await asyncio.gather(*(generate(budgeted, **SUMMARY, user_id="thrifty")
                                     for _ in range(2)))
    providers = sorted(s[-1]["metadata"]["provider"] for s in streams)
    assert providers == ["anthropic", "local"]  # the second could not afford the first's run
    assert all(s[-1]["metadata"]["single_flight"]["leader"] for s in streams)


async def test_requests_that_joined_a_failed_run_get_and_record_its_error(api: InProcess) -> None:
    api.anthropic.default = ProviderError("HTTP 503", provider="anthropic",
                                          model="claude-3-5-haiku-latest", upstream_status=503)
    api.openai.default = api.anthropic.default
    responses = await asyncio.gather(*(
        api.post("/api/v1/ai/generate-content", {
            "content": MATERIAL, **SUMMARY, "user_id": "class-9", "stream": False,
            "preferred_providers": ["anthropic"], "model": "gpt-4o"})
        for _ in range(3)))
    assert [r.status_code for r in responses] == [503] * 3
    assert all(r.json()["metadata"]["error"]["code"] == "all_providers_failed" for r in responses)
    records = await api.records("class-9")
    assert [(r["outcome"], r["status"]) for r in records] == [("error", 503)] * 3


async def test_a_run_is_cancelled_when_its_last_client_leaves(api: InProcess) -> None:
    api.anthropic.enqueue(Hang(after_words=2))  # streams two words, then would go silent
    content, accounting = api.services.content, api.services.accounting
    request = GenerateContentRequest(content=MATERIAL, **SUMMARY, user_id="leaver")
    prepared = content.prepare(request)
    key = api.services.config.auth.api_keys[0]
    meters = [await accounting.start(key, "leaver", Operation.CONTENT) for _ in range(2)]
    streams = [meter.watch(await content.events(prepared, meter)) for meter in meters]  # as served
    for stream in streams:
        assert (await anext(stream))["type"] == "summary"
    await streams[0].aclose()  # the client that started the run leaves; the other still reads
    assert (await anext(streams[1]))["content"] == " fine"
    await streams[1].aclose()  # the last one leaves: nobody would read the rest
    await asyncio.sleep(1.5)  # past the idle limit, which would otherwise fall back
    assert len(api.anthropic.calls) == 1 and api.openai.calls == []
    assert [(r["outcome"], r["status"]) for r in await api.records("leaver")] == [
        ("client_disconnected", 499)] * 2


async def test_a_quiz_cut_midway_is_generated_again_not_stitched_from_two_models(
        api: InProcess) -> None:
    api.openai.enqueue(Cut('{"questions": [{"question": '))
    response = await api.post("/api/v1/ai/generate-content", {
        "content": MATERIAL, "content_type": "quiz", "model": "gpt-4o-mini", "stream": False})
    body = response.json()
    assert response.status_code == 200, body
    assert body["metadata"]["repaired"] is False
    assert body["metadata"]["provider"] == "local"
    assert body["metadata"]["provider_path"][0]["path"][0].endswith("(failed: openai/gpt-4o-mini: "
                                                                    "stream cut)")
