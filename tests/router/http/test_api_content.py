"""/api/v1/ai/generate-content through the real graph: the local model for every content type,
fake hosted providers for escalation and single flight."""

from __future__ import annotations

import asyncio
import json
import typing
import uuid

import httpx
import pytest

from content.schemas import validate
from content.templates import ContentType
from tests.conftest import AUTH
from tests.fakes import Reply
from tests.router.http.test_api_accounting import records

MATERIAL = "Photosynthesis: plants use light, water and carbon dioxide to make sugar and oxygen."
QUIZ = {"questions": [{"question": "What do plants make?", "options": ["sugar", "salt", "iron",
                       "sand"], "answer_index": 0, "rationale": "Photosynthesis makes sugar."}]}


def events(url: str, **body) -> tuple[int, list[dict]]:
    body = {"content": MATERIAL, "stream": True, "max_tokens": 200, **body}
    with httpx.stream("POST", f"{url}/api/v1/ai/generate-content", json=body, timeout=120, headers=AUTH) as r:
        if not r.headers["content-type"].startswith("text/event-stream"):
            return r.status_code, [json.loads(r.read())]
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        status = r.status_code
    assert lines[-1] == "[DONE]"
    return status, [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("content_type", typing.get_args(ContentType))
def test_every_content_type_streams_well_formed_events_to_a_terminal(serve_url,
                                                                     content_type) -> None:
    status, stream = events(serve_url, content_type=content_type, model="smollm2-135m",
                            persona="step_by_step", difficulty="beginner", max_tokens=800)
    assert status == 200, json.dumps(stream[-1]["metadata"])[:2000]
    assert all(set(e) == {"content", "type", "metadata"} for e in stream)
    assert [e["metadata"]["seq"] for e in stream] == list(range(1, len(stream) + 1))
    done = stream[-1]
    assert done["type"] == "done", json.dumps(done["metadata"])[:1500]
    assert done["metadata"]["provider"] == "local"
    assert done["metadata"]["usage"]["completion_tokens"] > 0
    assert done["metadata"]["difficulty"] == 1
    body = [e for e in stream if e["type"] == content_type]
    assert body and all("structure" in e["metadata"] for e in body)
    if content_type in ("quiz", "flashcards", "practice_problems"):
        data = done["metadata"]["data"]
        assert validate(content_type, json.dumps(data))[0] == data


def test_non_streamed_returns_the_whole_content_and_metadata(serve_url) -> None:
    response = httpx.post(f"{serve_url}/api/v1/ai/generate-content", timeout=120, json={
        "content": MATERIAL, "content_type": "summary", "stream": False, "model": "smollm2-135m",
        "difficulty": 3, "recent_score": 0.95, "max_tokens": 60}, headers=AUTH)
    body = response.json()
    assert response.status_code == 200, body
    assert body["content"].strip() and body["type"] == "summary"
    assert body["metadata"]["difficulty"] == 4
    assert "raised from 3" in body["metadata"]["difficulty_reason"]


def test_invalid_output_is_repaired_then_escalated_to_the_large_tier(serve_url,
                                                                     fake_openai) -> None:
    fake_openai.enqueue(Reply(text="Here is a quiz!"), Reply(text='{"questions": []}'),
                        Reply(text=json.dumps(QUIZ)))
    response = httpx.post(f"{serve_url}/api/v1/ai/generate-content", timeout=60, json={
        "content": MATERIAL, "content_type": "quiz", "stream": False, "model": "gpt-4o-mini"}, headers=AUTH)
    body = response.json()
    assert response.status_code == 200, body
    assert body["data"] == QUIZ
    assert [r.body["model"] for r in fake_openai.requests] == ["gpt-4o-mini", "gpt-4o-mini",
                                                              "gpt-4o"]
    assert "does not validate" in fake_openai.requests[1].body["messages"][-1]["content"]
    assert body["metadata"]["repaired"] is True
    assert [p["model"] for p in body["metadata"]["provider_path"]] == [
        "gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]


def test_when_nothing_validates_the_error_is_typed(serve_url, fake_openai, fake_anthropic) -> None:
    fake_openai.enqueue(*[Reply(text="nope")] * 4)
    for stream in (False, True):  # before any content, a failure is an HTTP error, not a 200
        response = httpx.post(f"{serve_url}/api/v1/ai/generate-content", timeout=60, json={
            "content": MATERIAL, "content_type": "flashcards", "model": "gpt-4o-mini",
            "stream": stream}, headers=AUTH)
        assert response.status_code == 502
        error = response.json()["metadata"]["error"]
        assert error["type"] == "upstream_error"
        assert "no model produced valid flashcards JSON" in error["message"]
        fake_openai.enqueue(*[Reply(text="nope")] * 4)


async def test_identical_concurrent_requests_share_one_upstream_call(serve_url,
                                                                     fake_anthropic) -> None:
    fake_anthropic.enqueue(Reply(text="# Light\nPlants catch light.\n- leaves\n- roots",
                                 chunk_delay_s=0.05))
    body = {"content": MATERIAL, "content_type": "explanation", "model": "claude-3-5-haiku-latest",
            "stream": True, "user_id": f"class-7b-{uuid.uuid4().hex[:8]}"}

    async def one(client: httpx.AsyncClient) -> list[dict]:
        async with client.stream("POST", f"{serve_url}/api/v1/ai/generate-content",
                                 json=body) as r:
            return [json.loads(line[6:]) async for line in r.aiter_lines()
                    if line.startswith("data: {")]

    async with httpx.AsyncClient(headers=AUTH, timeout=60) as client:
        streams = await asyncio.gather(*(one(client) for _ in range(20)))
    assert len(fake_anthropic.requests) == 1
    texts = {"".join(e["content"] for e in s if e["type"] == "explanation") for s in streams}
    assert texts == {"# Light\nPlants catch light.\n- leaves\n- roots"}
    terminals = [s[-1]["metadata"] for s in streams]
    assert sum(t["single_flight"]["leader"] for t in terminals) == 1
    assert sum(t["billed_usd"] for t in terminals) == terminals[0]["cost_usd"] or \
        max(t["billed_usd"] for t in terminals) == terminals[0]["cost_usd"]
    # The ledger bills the run once: the leader's record carries it, the 19 others are "shared".
    ledger = records(serve_url, body["user_id"], expect=20)
    assert sorted(r["outcome"] for r in ledger) == ["shared"] * 19 + ["success"]
    (leader,) = [r for r in ledger if r["outcome"] == "success"]
    assert leader["cost_usd"] == pytest.approx(terminals[0]["cost_usd"])
    assert leader["cost_usd"] > 0
    assert sum(r["cost_usd"] for r in ledger if r["outcome"] == "shared") == 0


def test_a_run_stops_when_its_only_client_leaves(serve_url) -> None:
    who = f"leaver-{uuid.uuid4().hex[:8]}"
    body = {"content": MATERIAL, "content_type": "explanation", "model": "smollm2-135m",
            "stream": True, "max_tokens": 4096, "user_id": who}
    with httpx.stream("POST", f"{serve_url}/api/v1/ai/generate-content", json=body, timeout=120,
                      headers=AUTH) as response:
        lines = response.iter_lines()
        received = [line for _, line in zip(range(6), lines, strict=False) if line.startswith("data: {")]
    assert received  # the client read a few events, then left
    (record,) = records(serve_url, who, timeout=30)
    assert (record["outcome"], record["status"]) == ("client_disconnected", 499)
    assert record["output_tokens"] < 64  # generation stopped soon after, not at its end


@pytest.mark.parametrize(("body", "says"), [
    ({"content_type": "poem"}, "content_type"),
    ({"content_type": "summary", "content": ""}, "content"),
    ({"content_type": "summary", "difficulty": 9}, "between 1 and 5"),
    ({"content_type": "summary", "persona": "x" * 1001}, "persona"),
    ({"content_type": "summary", "recent_score": 2}, "recent_score"),
])
def test_bad_content_requests_get_a_clear_400(serve_url, body, says) -> None:
    response = httpx.post(f"{serve_url}/api/v1/ai/generate-content", timeout=30,
                          json={"content": MATERIAL, **body}, headers=AUTH)
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]
