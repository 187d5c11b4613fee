"""The usage ledger end to end: one record per request, whatever happened to it, on PostgreSQL (the
full app at /) and on SQLite (the API-only app at /lite), with token counts that match what the
fake providers reported."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from core.generation import GenerationParams
from core.pricing import prompt_estimate
from tests.conftest import AUTH
from tests.fakes import Fault, Reply
from tests.fakes.catalog import MODELS
from tests.metrics import total

ASK = [{"role": "user", "content": "Explain photosynthesis to a new student in one line."}]
PRICES = {c.name: c for c in MODELS}
DETAILS = "ray_learnx_token_details_total"


@pytest.fixture(params=["postgres", "sqlite"])
def app(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(base URL, the api key id its records carry)."""
    if request.param == "postgres":
        return request.getfixturevalue("serve_url"), "tests"
    return request.getfixturevalue("lite_url"), "dev"


def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


def chat(url: str, who: str, stream: bool = False, **body: Any) -> tuple[str, httpx.Response, str]:
    request_id = uuid.uuid4().hex
    payload = {"messages": ASK, "max_tokens": 64, "user": who, "stream": stream, **body}
    headers = {**AUTH, "x-request-id": request_id}
    response = httpx.post(f"{url}/v1/chat/completions", json=payload, headers=headers, timeout=60)
    return request_id, response, response.text


def records(url: str, who: str, expect: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{url}/api/v1/ai/usage/records",
                             params={"user_id": who, "limit": max(expect, 50)}, headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text
        found = response.json()["records"]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def price(model: str, prompt: int, completion: int) -> float:
    card = PRICES[model]
    return (prompt * card.input_per_million + completion * card.output_per_million) / 1e6


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_successful_request_is_recorded_with_the_providers_usage(app, fake_openai, stream) -> None:
    url, key_id = app
    who = user()
    fake_openai.enqueue(Reply(prompt_tokens=37, completion_tokens=11))
    request_id, response, text = chat(url, who, stream, model="gpt-4o-mini")
    assert response.status_code == 200, text
    (record,) = records(url, who)
    assert record["request_id"] == request_id == response.headers["x-request-id"]
    assert (record["provider"], record["model"]) == ("openai", "gpt-4o-mini")
    assert (record["input_tokens"], record["output_tokens"]) == (37, 11)
    assert record["cost_usd"] == pytest.approx(price("gpt-4o-mini", 37, 11))
    assert record["usage_source"] == "provider"
    assert (record["outcome"], record["status"], record["streamed"]) == ("success", 200, stream)
    assert (record["api_key_id"], record["operation"]) == (key_id, "chat.completions")
    assert record["fallback_path"] is None


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_fallen_back_request_bills_both_attempts(app, fake_openai, fake_anthropic, stream) -> None:
    url, _ = app
    who = user()
    fake_openai.enqueue(Fault(cut_after=3))  # three one-token chunks, then the stream is cut
    fake_anthropic.enqueue(Reply(prompt_tokens=50, completion_tokens=9))
    _, response, text = chat(url, who, stream, model="small",
                             preferred_providers=["openai", "anthropic"])
    assert response.status_code == 200, text
    (record,) = records(url, who)
    assert record["provider"] == "anthropic"
    assert [step.split(" ")[0] for step in record["fallback_path"]] == [
        "openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"]
    cut_prompt = prompt_estimate(GenerationParams(ASK, 64))  # the cut attempt never said
    assert (record["input_tokens"], record["output_tokens"]) == (cut_prompt + 50, 3 + 9)
    assert record["cost_usd"] == pytest.approx(
        price("gpt-4o-mini", cut_prompt, 3) + price("claude-3-5-haiku-latest", 50, 9))
    assert record["usage_source"] == "estimated"


def test_a_request_that_fails_everywhere_is_recorded_as_an_error(lite_url, fake_openai,
                                                                 fake_anthropic) -> None:
    who = user()
    fake_openai.enqueue(*[Fault(status=503)] * 4)
    fake_anthropic.enqueue(*[Fault(status=503)] * 4)
    _, response, text = chat(lite_url, who, model="small")
    assert response.status_code == 503, text
    (record,) = records(lite_url, who)
    assert (record["outcome"], record["status"]) == ("error", 503)
    assert record["error_type"] == "service_unavailable"
    assert (record["input_tokens"], record["output_tokens"], record["cost_usd"]) == (0, 0, 0)
    assert len(record["fallback_path"]) >= 2


def test_a_rejected_request_is_recorded_with_its_status(app, fake_openai) -> None:
    url, _ = app
    who = user()
    fake_openai.enqueue(Fault(status=400))
    _, response, _ = chat(url, who, model="gpt-4o-mini")
    assert response.status_code == 400
    (record,) = records(url, who)
    assert (record["outcome"], record["status"], record["output_tokens"]) == ("error", 400, 0)


def test_a_client_that_leaves_mid_stream_is_billed_for_what_was_generated(app, fake_openai) -> None:
    url, _ = app
    who = user()
    words = 400
    fake_openai.enqueue(Reply(text=" ".join(["word"] * words), chunk_delay_s=0.02))
    body = {"messages": ASK, "max_tokens": 1000, "user": who, "stream": True, "model": "gpt-4o-mini"}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH,
                      timeout=60) as response:
        lines = response.iter_lines()
        received = sum(1 for _, line in zip(range(12), lines, strict=False) if '"content"' in line)
    (record,) = records(url, who)
    assert (record["outcome"], record["status"]) == ("client_disconnected", 499)
    assert received - 1 <= record["output_tokens"] < words  # counted as the router received them
    assert record["input_tokens"] == prompt_estimate(GenerationParams(ASK, 1000))
    assert record["usage_source"] == "estimated"
    assert record["cost_usd"] == pytest.approx(
        price("gpt-4o-mini", record["input_tokens"], record["output_tokens"]))


def test_local_requests_report_their_savings(serve_url) -> None:
    who = user()
    _, response, text = chat(serve_url, who, model="smollm2-135m", max_tokens=8)
    assert response.status_code == 200, text
    (record,) = records(serve_url, who)
    usage = response.json()["usage"]
    assert (record["input_tokens"], record["output_tokens"]) == (
        usage["prompt_tokens"], usage["completion_tokens"])
    baseline = price("gpt-4o-mini", usage["prompt_tokens"], usage["completion_tokens"])
    assert record["hosted_equivalent_usd"] == pytest.approx(baseline)
    report = httpx.get(f"{serve_url}/api/v1/ai/usage", params={"user_id": who}, headers=AUTH,
                       timeout=30).json()
    assert report["savings"]["local_requests"] == 1
    assert report["savings"]["savings_usd"] == pytest.approx(baseline)
    assert report["by_provider"] == [{"provider": "local", "requests": 1, **_tokens(usage), "cost_usd": 0}]


def _tokens(usage: dict[str, int]) -> dict[str, int]:
    return {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"], "cached_input_tokens": 0,
            "cache_write_tokens": 0, "reasoning_tokens": 0}


def test_embeddings_and_content_are_recorded(serve_url, fake_openai) -> None:
    who = user()
    response = httpx.post(f"{serve_url}/api/v1/ai/embeddings", headers=AUTH, timeout=60,
                          json={"texts": [f"cells {who}", f"cells {who}"], "user_id": who})
    assert response.status_code == 200, response.text
    response = httpx.post(f"{serve_url}/v1/embeddings", headers=AUTH, timeout=60,
                          json={"input": ["a b c"], "model": "text-embedding-3-small", "user": who})
    assert response.status_code == 200, response.text
    response = httpx.post(f"{serve_url}/api/v1/ai/generate-content", headers=AUTH, timeout=60, json={
        "content": "Cells", "content_type": "summary", "user_id": who, "stream": False,
        "preferred_providers": ["openai"]})
    assert response.status_code == 200, response.text
    found = {r["operation"] + ":" + r["provider"]: r for r in records(serve_url, who, expect=3)}
    assert set(found) == {"embeddings:local", "embeddings:openai", "generate-content:openai"}
    assert found["embeddings:openai"]["input_tokens"] == 3  # the fake counts words
    assert found["embeddings:openai"]["cost_usd"] == pytest.approx(3 * 0.02 / 1e6)
    assert found["generate-content:openai"]["content_type"] == "summary"
    report = httpx.get(f"{serve_url}/api/v1/ai/usage", params={"user_id": who}, headers=AUTH,
                       timeout=30).json()
    assert report["totals"]["requests"] == 3
    assert {r["operation"] for r in report["by_operation"]} == {"embeddings", "generate-content"}
    assert report["totals"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in found.values()))


def test_usage_report_validates_its_window(serve_url) -> None:
    response = httpx.get(f"{serve_url}/api/v1/ai/usage", headers=AUTH, timeout=30,
                         params={"from": "2026-02-30"})
    assert response.status_code == 400
    assert "from" in response.json()["error"]["message"]
    response = httpx.get(f"{serve_url}/api/v1/ai/usage", headers=AUTH, timeout=30,
                         params={"from": "2026-11-02", "to": "2026-11-01"})
    assert response.status_code == 400
    total = httpx.get(f"{serve_url}/api/v1/ai/usage", headers=AUTH, timeout=30).json()
    assert set(total) >= {"totals", "by_day", "by_provider", "by_model", "by_operation", "savings"}
    assert json.dumps(total)  # plain JSON numbers, whatever the database returned


def test_cache_and_reasoning_tokens_are_counted_in_the_metrics(serve_url, fake_anthropic) -> None:
    """learnx_token_details_total counts, by kind, what the provider reported: the lesson written
    once, then read; each answer's reasoning tokens."""
    model, kinds = "claude-3-5-sonnet-latest", ("cached_input", "cache_write", "reasoning")
    lesson = " ".join(f"metrics{i}" for i in range(1500))  # 1500 tokens to the fake, cached once
    before = {kind: total(DETAILS, model=model, kind=kind) for kind in kinds}
    fake_anthropic.enqueue(Reply(reasoning_tokens=5), Reply(reasoning_tokens=5))
    for question in ("What is a cell?", "Why are leaves green?"):
        _, response, text = chat(serve_url, user(), model=model, messages=[
            {"role": "system", "content": lesson}, {"role": "user", "content": question}])
        assert response.status_code == 200, text
    counted: dict[str, float] = {}
    deadline = time.monotonic() + 15
    while counted != {"cached_input": 1500, "cache_write": 1500, "reasoning": 10} \
            and time.monotonic() < deadline:
        time.sleep(0.2)
        counted = {kind: total(DETAILS, model=model, kind=kind) - before[kind] for kind in kinds}
    assert counted == {"cached_input": 1500, "cache_write": 1500, "reasoning": 10}
