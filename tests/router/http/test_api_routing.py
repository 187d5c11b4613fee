"""Requests by concrete model, alias and tier land on the right provider, through the real graph
with the fake OpenAI and Anthropic servers as upstreams; usage and cost are exact."""

from __future__ import annotations

import json

import httpx
import pytest

from core.generation import TokenUsage
from core.pricing import cost
from tests.conftest import ANTHROPIC_KEY, AUTH, OPENAI_KEY
from tests.fakes import Reply
from tests.fakes.catalog import MODELS
from tests.fakes.inprocess import NO_CACHE

CARDS = {c.name: c for c in MODELS}
ASK = [{"role": "system", "content": "You are a patient tutor."},
       {"role": "user", "content": "What is a fraction?"}]


def chat(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"messages": ASK, "max_tokens": 32, **body},
                      timeout=60, headers=AUTH)


def stream_events(url: str, **body) -> list[dict]:
    body = {"messages": ASK, "max_tokens": 32, "stream": True,
            "stream_options": {"include_usage": True}, **body}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60, headers=AUTH) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize(("requested", "provider", "model"), [
    ("gpt-4o-mini", "openai", "gpt-4o-mini"),
    ("gpt-4", "openai", "gpt-4o"),
    ("claude-3-5-haiku-latest", "anthropic", "claude-3-5-haiku-latest"),
    ("claude-sonnet", "anthropic", "claude-3-5-sonnet-latest"),
    ("small", "local", "smollm2-135m"),  # cost optimization: the local model costs 0
    ("large", "openai", "gpt-4o"),  # gpt-4o is cheaper than claude-3-5-sonnet
])
def test_model_alias_and_tier_route_to_the_right_provider(
        serve_url, fake_openai, fake_anthropic, requested, provider, model) -> None:
    response = chat(serve_url, model=requested)
    assert response.status_code == 200, response.text
    assert response.headers["x-learnx-route"] == f"{provider}/{model}"
    body = response.json()
    assert body["model"] == model
    assert body["route"]["provider"] == provider
    assert body["route"]["reason"]
    upstream = {"openai": fake_openai, "anthropic": fake_anthropic}.get(provider)
    if upstream is not None:
        assert [r.body["model"] for r in upstream.requests] == [model]


def test_preferred_providers_win_over_cost(serve_url, fake_anthropic) -> None:
    response = chat(serve_url, model="small", preferred_providers=["anthropic", "openai"])
    assert response.headers["x-learnx-route"] == "anthropic/claude-3-5-haiku-latest"
    assert "preferred provider anthropic" in response.json()["route"]["reason"]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-haiku-latest"])
def test_usage_and_cost_match_the_provider_exactly(serve_url, fake_openai, fake_anthropic,
                                                   model) -> None:
    fake = fake_openai if model.startswith("gpt") else fake_anthropic
    fake.enqueue(Reply(text="A fraction is a part of a whole.", prompt_tokens=1234,
                       completion_tokens=56))
    body = chat(serve_url, model=model).json()
    assert body["usage"] == {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290,
                             **NO_CACHE}
    assert body["route"]["cost_usd"] == cost(CARDS[model], TokenUsage(1234, 56))
    assert body["choices"][0]["message"]["content"] == "A fraction is a part of a whole."


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-haiku-latest"])
def test_streamed_usage_and_cost_match_the_provider_exactly(serve_url, fake_openai, fake_anthropic,
                                                            model) -> None:
    fake = fake_openai if model.startswith("gpt") else fake_anthropic
    fake.enqueue(Reply(text="Halves and quarters are fractions.", prompt_tokens=777,
                       completion_tokens=9))
    events = stream_events(serve_url, model=model)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "Halves and quarters are fractions."
    finish = next(e for e in events if e["choices"] and e["choices"][0].get("finish_reason"))
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["route"]["cost_usd"] == cost(CARDS[model], TokenUsage(777, 9))
    assert events[-1]["usage"] == {"prompt_tokens": 777, "completion_tokens": 9, "total_tokens": 786,
                                   **NO_CACHE}


def test_anthropic_receives_a_faithful_translation(serve_url, fake_anthropic) -> None:
    chat(serve_url, model="claude-3-5-haiku-latest", temperature=0.5, top_p=0.9, stop=["END"])
    (sent,) = fake_anthropic.requests
    assert (sent.body["temperature"], sent.body["top_p"]) == (0.5, 0.9)
    assert sent.body["system"] == "You are a patient tutor."
    assert sent.body["messages"] == [{"role": "user", "content": "What is a fraction?"}]
    assert sent.body["max_tokens"] == 32
    assert sent.body["stop_sequences"] == ["END"]
    assert sent.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    assert sent.headers["anthropic-version"]


def test_openai_receives_the_key_and_the_request(serve_url, fake_openai) -> None:
    chat(serve_url, model="gpt-4o-mini", seed=7)
    (sent,) = fake_openai.requests
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent.body["messages"] == ASK
    assert sent.body["seed"] == 7
    assert sent.body["max_completion_tokens"] == 32


def test_unknown_model_lists_models_and_tiers(serve_url) -> None:
    response = chat(serve_url, model="gpt-9")
    assert response.status_code == 404
    assert "small" in response.json()["error"]["message"]


def test_keys_never_appear_in_responses(serve_url, fake_openai) -> None:
    from tests.fakes import Fault

    fake_openai.enqueue(Fault(status=401))
    for response in (httpx.get(f"{serve_url}/v1/models", headers=AUTH), chat(serve_url, model="gpt-4o-mini")):
        assert OPENAI_KEY not in response.text
        assert ANTHROPIC_KEY not in response.text
