"""The hosted adapters in process against the fake servers (the session fakes of conftest, reset
before each test): transforms, env config, errors."""

from __future__ import annotations

from typing import Any

import pytest

from core.config import AppConfig, HostedProviderConfig
from core.errors import InvalidRequest, ProviderError, ProviderTimeout
from core.generation import GenerationParams, TokenUsage
from router.run.providers import build_providers
from router.run.providers.anthropic import AnthropicProvider, to_anthropic
from router.run.providers.openai import OpenAIProvider, to_openai
from tests.deltas import collect
from tests.fakes import FakeOpenAI, Fault, Reply

PARAMS = GenerationParams(
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "user", "content": "there"}, {"role": "assistant", "content": "Hello"},
              {"role": "system", "content": "Use British spelling."}],
    max_tokens=20, temperature=0.2, stop=["\n\n"])


OPENED: list[OpenAIProvider | AnthropicProvider] = []


def opened(provider: OpenAIProvider | AnthropicProvider | None) -> Any:
    assert provider is not None
    OPENED.append(provider)
    return provider


def openai_provider(fake: FakeOpenAI, **config: Any) -> OpenAIProvider:
    config = {"base_url": f"{fake.url}/v1", **config}
    provider: OpenAIProvider = opened(OpenAIProvider.from_env(HostedProviderConfig(**config),
                                                              {"OPENAI_API_KEY": "k"}))
    return provider


def anthropic_provider(**config: Any) -> AnthropicProvider:
    provider: AnthropicProvider = opened(AnthropicProvider.from_env(
        HostedProviderConfig(**config), {"ANTHROPIC_API_KEY": "k"}))
    return provider


def test_anthropic_transform_moves_system_and_merges_turns() -> None:
    request = to_anthropic("claude-3-5-haiku-latest", PARAMS)
    assert request["system"] == "Be brief.\n\nUse British spelling."
    assert request["messages"] == [{"role": "user", "content": "Hi\n\nthere"},
                                   {"role": "assistant", "content": "Hello"}]
    assert request["stop_sequences"] == ["\n\n"]
    assert request["max_tokens"] == 20


async def test_anthropic_gets_the_callers_temperature_and_top_p(fake_anthropic) -> None:
    provider = anthropic_provider(base_url=fake_anthropic.url)
    await collect(provider.stream("claude-3-5-haiku-latest",
                                  GenerationParams(PARAMS.messages, 20, temperature=0.2, top_p=0.9)))
    await collect(provider.stream("claude-3-5-haiku-latest",
                                  GenerationParams(PARAMS.messages, 20, temperature=0.0)))
    sent = [request.body for request in fake_anthropic.requests]
    assert [(body.get("temperature"), body.get("top_p")) for body in sent] == [(0.2, 0.9), (0.0, None)]


async def test_a_temperature_anthropic_cannot_take_is_a_400_before_any_call(fake_anthropic) -> None:
    provider = anthropic_provider(base_url=fake_anthropic.url)
    with pytest.raises(InvalidRequest) as raised:
        await collect(provider.stream("claude-3-5-haiku-latest",
                                      GenerationParams(PARAMS.messages, 20, temperature=1.5)))
    assert raised.value.param == "temperature"
    assert not fake_anthropic.requests


async def test_arguments_that_do_not_translate_are_the_callers_error_not_an_outage(
        fake_anthropic) -> None:
    provider = anthropic_provider(base_url=fake_anthropic.url)
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "not json"}}]
    params = GenerationParams([{"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "", "tool_calls": calls},
                               {"role": "tool", "tool_call_id": "c1", "content": "ok"}], 20)
    with pytest.raises(InvalidRequest):  # never a ProviderError, which a breaker counts
        await collect(provider.stream("claude-3-5-haiku-latest", params))
    assert not fake_anthropic.requests


def test_openai_transform_maps_json_modes() -> None:
    assert to_openai("m", GenerationParams([], 5, json_schema={}))["response_format"] == {
        "type": "json_object"}
    schema = {"type": "object"}
    assert to_openai("m", GenerationParams([], 5, json_schema=schema))["response_format"][
        "json_schema"]["schema"] == schema
    assert "response_format" not in to_openai("m", GenerationParams([], 5))


def test_provider_without_key_is_not_built() -> None:
    providers = build_providers(AppConfig(auth={"enabled": False}), {}, environ={"ANTHROPIC_API_KEY": "a"})
    assert set(providers) == {"anthropic"}
    assert build_providers(AppConfig(auth={"enabled": False}), {}, environ={}) == {}


async def test_openai_base_url_comes_from_the_sdks_own_env_var(fake_openai, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{fake_openai.url}/v1")
    provider = opened(OpenAIProvider.from_env(HostedProviderConfig(), {"OPENAI_API_KEY": "k"}))
    await collect(provider.stream("gpt-4o-mini", PARAMS))
    assert len(fake_openai.requests) == 1


async def test_anthropic_base_url_comes_from_the_sdks_own_env_var(fake_anthropic,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.url)
    provider = anthropic_provider()
    completion = await collect(provider.stream("claude-3-5-haiku-latest", PARAMS))
    assert completion.finish_reason == "stop"
    assert len(fake_anthropic.requests) == 1


async def test_anthropic_usage_and_stop_reason(fake_anthropic) -> None:
    provider = anthropic_provider(base_url=fake_anthropic.url)
    fake_anthropic.enqueue(Reply(text="one two three", prompt_tokens=40, completion_tokens=3,
                                 finish_reason="length"))
    completion = await collect(provider.stream("c", PARAMS))
    assert (completion.text, completion.finish_reason, completion.usage) == (
        "one two three", "length", TokenUsage(40, 3))


@pytest.mark.parametrize(("fault", "error"), [
    (Fault(status=400), InvalidRequest),
    (Fault(status=401), ProviderError),
    (Fault(status=503), ProviderError),
    (Fault(status=429, retry_after=3), ProviderError),
])
async def test_upstream_status_becomes_a_typed_error(fake_openai, fault, error) -> None:
    fake_openai.enqueue(fault)
    with pytest.raises(error) as raised:
        await collect(openai_provider(fake_openai).stream("gpt-4o-mini", PARAMS))
    if isinstance(raised.value, ProviderError):
        assert raised.value.upstream_status == fault.status
        assert raised.value.retry_after == fault.retry_after
        assert raised.value.retryable == (fault.status != 401)


async def test_timeout_is_a_provider_timeout(fake_openai) -> None:
    provider = openai_provider(fake_openai, timeout_s=0.3)
    fake_openai.enqueue(Fault(delay_s=2))
    with pytest.raises(ProviderTimeout):
        await collect(provider.stream("gpt-4o-mini", PARAMS))


async def test_openai_usage(fake_openai) -> None:
    fake_openai.enqueue(Reply(text="a b", prompt_tokens=11, completion_tokens=2))
    provider = openai_provider(fake_openai)
    assert (await collect(provider.stream("g", PARAMS))).usage == TokenUsage(11, 2)


async def test_anthropic_structured_output_is_a_forced_tool_call(fake_anthropic) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    provider = anthropic_provider(base_url=fake_anthropic.url)
    fake_anthropic.enqueue(Reply(text='{"answer": "four"}'))
    completion = await collect(provider.stream("c", GenerationParams(
        [{"role": "user", "content": "2+2?"}], 50, json_schema=schema)))
    assert completion.text == '{"answer": "four"}'
    assert completion.finish_reason == "stop"
    (sent,) = fake_anthropic.requests
    assert sent.body["tools"][0]["input_schema"] == schema
    assert sent.body["tool_choice"] == {"type": "tool", "name": sent.body["tools"][0]["name"]}


async def test_an_anthropic_stream_that_fails_after_message_start_carries_the_billed_prompt(
        fake_anthropic) -> None:
    provider = anthropic_provider(base_url=fake_anthropic.url)
    fake_anthropic.enqueue(Fault(cut_after=0))  # message_start (with the prompt's tokens), then cut
    with pytest.raises(ProviderError) as raised:
        await collect(provider.stream("c", PARAMS))
    usage = raised.value.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens == 0


async def test_a_raw_prompt_goes_to_openais_completions_api(fake_openai) -> None:
    fake_openai.enqueue(Reply(text="upon a time", prompt_tokens=3, completion_tokens=3,
                              finish_reason="length"))
    provider = openai_provider(fake_openai)
    completion = await collect(provider.stream("gpt-3.5-turbo-instruct", GenerationParams(
        [], 3, temperature=0.0, stop=["."], seed=7, prompt="Once")))
    assert (completion.text, completion.finish_reason, completion.usage) == \
        ("upon a time", "length", TokenUsage(3, 3))
    (sent,) = fake_openai.requests
    assert sent.path == "/v1/completions"
    assert {k: sent.body[k] for k in ("model", "prompt", "max_tokens", "stop", "seed", "stream")} \
        == {"model": "gpt-3.5-turbo-instruct", "prompt": "Once", "max_tokens": 3, "stop": ["."],
            "seed": 7, "stream": True}


async def test_a_completions_stream_cut_midway_is_a_provider_error(fake_openai) -> None:
    fake_openai.enqueue(Fault(cut_after=1))
    with pytest.raises(ProviderError):
        await collect(openai_provider(fake_openai).stream(
            "gpt-3.5-turbo-instruct", GenerationParams([], 5, prompt="Once")))
