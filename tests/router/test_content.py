"""generate-content in process: events, structure, validation with repair and escalation, typed
failures, and single flight, over the fake engine and scripted hosted providers."""

from __future__ import annotations

import asyncio
import json

from tests.fakes.inprocess import InProcess
from tests.fakes.scripted import Cut, Say

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
