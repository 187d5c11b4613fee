"""Usage exact to the provider's own counts: every usage shape of both providers (streamed through
our adapters, and not streamed through the official SDKs), against the fakes that cache as the
providers do; each priced at its own rate, to the cent of a worked example; and where the adapters
place cache breakpoints and keys."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai

from core.generation import CacheBreakpoint, GenerationParams, TokenUsage, Tool
from core.pricing import cost
from router.run.providers.anthropic import anthropic_usage, to_anthropic
from router.run.providers.openai import openai_usage, to_openai
from tests.deltas import collect
from tests.fakes import FakeAnthropic, FakeOpenAI, Reply
from tests.fakes.caching import InvoiceLine
from tests.fakes.catalog import MODELS
from tests.router.run.providers.test_hosted import anthropic_provider, openai_provider

CARDS = {c.name: c for c in MODELS}
LESSON = " ".join(f"lesson{i}" for i in range(1500))  # 1500 tokens to the fakes (a token a word)


def asking(question: str, lesson: str = LESSON, **params: Any) -> GenerationParams:
    return GenerationParams([{"role": "system", "content": lesson},
                             {"role": "user", "content": question}], max_tokens=20, **params)


def billed(line: InvoiceLine) -> TokenUsage:
    """A line of a fake's invoice in the router's convention (the prompt counts every token)."""
    written = line.cache_write_5m + line.cache_write_1h
    return TokenUsage(line.input + line.cache_read + written, line.output,
                      cached_tokens=line.cache_read, cache_write_tokens=written,
                      cache_write_1h_tokens=line.cache_write_1h, reasoning_tokens=line.reasoning)


async def test_openai_streamed_usage_reports_the_prefix_read_from_its_cache(
        fake_openai: FakeOpenAI) -> None:
    provider = openai_provider(fake_openai)
    first = await collect(provider.stream("gpt-4o-mini", asking("What is a cell?")))
    second = await collect(provider.stream("gpt-4o-mini", asking("What is a leaf made of?")))
    assert first.usage == TokenUsage(1504, 11)
    # Kept: the first prompt's prefixes of 1024, 1152, 1280 and 1408 tokens; read: the longest.
    assert second.usage == TokenUsage(1506, 11, cached_tokens=1408)
    assert [billed(line) for line in fake_openai.invoice] == [first.usage, second.usage]
    keys = {r.body["prompt_cache_key"] for r in fake_openai.requests}
    assert len(keys) == 1 and keys.pop().startswith("lx-")  # one class, one cache


async def test_openai_usage_worked_example_to_the_cent(fake_openai: FakeOpenAI) -> None:
    """gpt-4o, 1506 prompt tokens of which 1408 cached, 11 + 40 reasoning completion tokens:
    98 x $2.50 + 1408 x $1.25 + 51 x $10.00 per million = $0.002515."""
    provider = openai_provider(fake_openai)
    await collect(provider.stream("gpt-4o", asking("What is a cell?")))
    fake_openai.enqueue(Reply(reasoning_tokens=40))
    done = await collect(provider.stream("gpt-4o", asking("What is a leaf made of?")))
    assert done.usage == TokenUsage(1506, 51, cached_tokens=1408, reasoning_tokens=40)
    assert cost(CARDS["gpt-4o"], done.usage) == 0.002515


async def test_openai_usage_not_streamed_through_the_sdk(fake_openai: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key="k", base_url=f"{fake_openai.url}/v1")
    try:
        body = to_openai("gpt-4o-mini", asking("What is a cell?"), 1024)
        await client.chat.completions.create(**body)
        fake_openai.enqueue(Reply(reasoning_tokens=7))
        answer = await client.chat.completions.create(**to_openai(
            "gpt-4o-mini", asking("And a leaf?"), 1024))
    finally:
        await client.close()
    assert answer.usage is not None
    usage = openai_usage(answer.usage.model_dump())
    assert usage == TokenUsage(1503, 18, cached_tokens=1408, reasoning_tokens=7)
    # 95 x $0.15 + 1408 x $0.075 (cached) + 18 x $0.60 (7 of them reasoning) per million
    assert cost(CARDS["gpt-4o-mini"], usage) == 0.00013065


async def test_openai_legacy_completions_usage(fake_openai: FakeOpenAI) -> None:
    provider = openai_provider(fake_openai)
    prompt = GenerationParams([], max_tokens=5, prompt=LESSON)
    await collect(provider.stream("gpt-3.5-turbo-instruct", prompt))
    again = await collect(provider.stream("gpt-3.5-turbo-instruct", prompt))
    assert again.usage == TokenUsage(1500, 11, cached_tokens=1408)
    # gpt-3.5-turbo-instruct has no cached rate: 1500 x $1.50 + 11 x $2.00 per million
    assert cost(CARDS["gpt-3.5-turbo-instruct"], again.usage) == 0.002272


async def test_anthropic_streamed_usage_writes_the_lesson_once_then_reads_it(
        fake_anthropic: FakeAnthropic) -> None:
    provider = anthropic_provider(base_url=fake_anthropic.url)
    first = await collect(provider.stream("claude-3-5-sonnet-latest", asking("What is a cell?")))
    second = await collect(provider.stream("claude-3-5-sonnet-latest",
                                           asking("What is a leaf made of?")))
    assert first.usage == TokenUsage(1504, 11, cache_write_tokens=1500)
    assert second.usage == TokenUsage(1506, 11, cached_tokens=1500)
    assert [billed(line) for line in fake_anthropic.invoice] == [first.usage, second.usage]


async def test_anthropic_usage_worked_example_to_the_cent(fake_anthropic: FakeAnthropic) -> None:
    """claude-3-5-sonnet: the lesson written (1500 x $3.75), then read (1500 x $0.30), each with
    its question at $3 and 11 output tokens at $15 per million: $0.005802 and $0.000633."""
    provider = anthropic_provider(base_url=fake_anthropic.url)
    card = CARDS["claude-3-5-sonnet-latest"]
    first = await collect(provider.stream(card.name, asking("What is a cell?")))
    second = await collect(provider.stream(card.name, asking("What is a leaf made of?")))
    assert cost(card, first.usage) == 0.005802
    assert cost(card, second.usage) == 0.000633


async def test_anthropic_usage_not_streamed_with_hour_long_writes(
        fake_anthropic: FakeAnthropic) -> None:
    client = anthropic.AsyncAnthropic(api_key="k", base_url=fake_anthropic.url, max_retries=0)
    body = to_anthropic("claude-3-5-sonnet-latest", asking(
        "What is a cell?", cache_breakpoints=(CacheBreakpoint(0, len(LESSON), "1h"),)))
    try:
        fake_anthropic.enqueue(Reply(reasoning_tokens=30))
        answer = await client.messages.create(**body)
    finally:
        await client.close()
    usage = anthropic_usage(answer.usage.model_dump())
    assert usage == TokenUsage(1504, 41, cache_write_tokens=1500, cache_write_1h_tokens=1500,
                               reasoning_tokens=30)
    # 4 x $3 + 1500 x $6 (an hour's write) + 41 x $15 per million
    assert cost(CARDS["claude-3-5-sonnet-latest"], usage) == 0.009627


async def test_anthropic_caches_nothing_without_breakpoints(fake_anthropic: FakeAnthropic) -> None:
    provider = anthropic_provider(base_url=fake_anthropic.url)
    for question in ("What is a cell?", "What is a leaf?"):
        done = await collect(provider.stream("claude-3-5-sonnet-latest",
                                             asking(question, prompt_cache=False)))
        assert (done.usage.cached_tokens, done.usage.cache_write_tokens) == (0, 0)


def test_the_breakpoint_goes_where_the_shared_prefix_ends() -> None:
    request = to_anthropic("m", asking("What is a cell?"), 1024)
    assert request["system"] == [{"type": "text", "text": LESSON,
                                  "cache_control": {"type": "ephemeral"}}]
    assert request["messages"] == [{"role": "user", "content": "What is a cell?"}]


def test_tools_alone_are_the_shared_prefix_when_there_is_no_system() -> None:
    tool = Tool("lookup", LESSON)
    params = GenerationParams([{"role": "user", "content": "Hi"}], 5, tools=(tool,))
    request = to_anthropic("m", params, 1024)
    assert request["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "system" not in request


def test_no_breakpoint_for_a_short_prefix_or_when_turned_off() -> None:
    assert to_anthropic("m", asking("Hi", lesson="Be brief."), 1024)["system"] == "Be brief."
    assert to_anthropic("m", asking("Hi", prompt_cache=False), 1024)["system"] == LESSON
    assert to_anthropic("m", asking("Hi"), None)["system"] == LESSON  # turned off in the config
    assert "prompt_cache_key" not in to_openai("m", asking("Hi", lesson="Be brief."), 1024)
    assert "prompt_cache_key" not in to_openai("m", asking("Hi", prompt_cache=False), 1024)


def test_a_callers_own_breakpoints_and_key_are_passed_on() -> None:
    params = GenerationParams(
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "Chapter one. Question?"}], 5,
        cache_breakpoints=(CacheBreakpoint(1, len("Chapter one."), "1h"),),
        prompt_cache_key="class-7")
    request = to_anthropic("m", params, 1024)
    assert request["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Chapter one.", "cache_control": {"type": "ephemeral",
                                                                   "ttl": "1h"}},
        {"type": "text", "text": " Question?"}]}]
    assert request["system"] == "Be brief."  # short: no breakpoint of ours
    assert to_openai("m", params, 1024)["prompt_cache_key"] == "class-7"
    assert to_openai("m", params, None)["prompt_cache_key"] == "class-7"


async def test_the_fakes_invoice_can_be_read_over_http(fake_anthropic: FakeAnthropic) -> None:
    """For tests in other processes (the Node client's): GET /_fake/script has the invoice."""
    provider = anthropic_provider(base_url=fake_anthropic.url)
    for question in ("What is a cell?", "What is a leaf?"):
        await collect(provider.stream("claude-3-5-sonnet-latest", asking(question)))
    async with httpx.AsyncClient() as client:
        invoice = (await client.get(f"{fake_anthropic.url}/_fake/script")).json()["invoice"]
    assert [(line["cache_write_5m"], line["cache_read"], line["input"]) for line in invoice] == [
        (1500, 0, 4), (0, 1500, 4)]
