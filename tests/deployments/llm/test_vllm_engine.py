"""VLLMEngine around a fake AsyncLLM (tests/fakes/async_llm.py) whose tokens come when the test
releases them: the requests in flight, the wait it expects and publishes, and what it refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from core.config import VLLMSettings
from core.generation import Delta, EngineBusy, EngineLoad, GenerationParams
from deployments.llm.vllm import VLLMEngine
from deployments.llm.vllm_load import FIRST_TOKEN_PRIOR_S
from tests.fakes.async_llm import FakeAsyncLLM, fake_vllm
from tests.fakes.clock import Clock


def ask(max_tokens: int = 50, priority: int = 0, limit: float | None = None) -> GenerationParams:
    return GenerationParams([{"role": "user", "content": "Explain photosynthesis."}], max_tokens,
                            priority=priority, max_queue_wait_s=limit)


async def started(fake: FakeAsyncLLM, engine: VLLMEngine, params: GenerationParams
                  ) -> tuple[AsyncIterator[Delta], asyncio.Task[Delta]]:
    """A stream of `params`, once vLLM has it (its first delta still to come)."""
    known = len(fake.requests)
    deltas = engine.generate(params)
    first = asyncio.ensure_future(anext(deltas))
    while len(fake.requests) == known and not first.done():
        await asyncio.sleep(0)
    return deltas, first


def counts(engine: VLLMEngine) -> tuple[int, int, int]:
    load = engine.load()
    return load.queued, load.busy, load.slots


async def test_requests_in_flight_are_counted_until_they_end_or_are_cancelled() -> None:
    clock = Clock()
    engine, fake = fake_vllm(VLLMSettings(max_num_seqs=2), clock)
    streams = [await started(fake, engine, ask(max_tokens=3)) for _ in range(3)]
    assert counts(engine) == (1, 2, 2)  # waiting, running, slots
    assert [r.priority for r in fake.requests] == [0, 0, 0]

    clock.advance(0.3)
    fake.requests[2].release()  # vLLM may start any: the one producing is running
    assert (await streams[2][1]).text == " w"
    fake.requests[2].release(2)
    assert [d.finish_reason async for d in streams[2][0]] == ["length"]
    assert counts(engine) == (0, 2, 2)

    for deltas, first in streams[:2]:  # the callers leave before their first token
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await deltas.aclose()
    assert engine.load() == EngineLoad(0, 0, 2, pytest.approx(FIRST_TOKEN_PRIOR_S))
    assert sorted(fake.aborted) == sorted(r.request_id for r in fake.requests)


async def test_measured_rates_make_the_expected_wait() -> None:
    clock = Clock()
    engine, fake = fake_vllm(VLLMSettings(max_num_seqs=1), clock)
    deltas, first = await started(fake, engine, ask(max_tokens=40))
    clock.advance(0.5)
    fake.requests[0].release()
    await first
    for _ in range(9):
        clock.advance(0.02)
        fake.requests[0].release()
        await anext(deltas)
    load = engine.load()
    assert load.estimated_wait_s > FIRST_TOKEN_PRIOR_S
    # 30 tokens left, each a step's time (measured from 0.05 s towards 0.02 s), then a first token
    # (measured from 0.1 s towards 0.5 s).
    assert 30 * 0.02 + FIRST_TOKEN_PRIOR_S < load.estimated_wait_s < 30 * 0.05 + 0.5
    await deltas.aclose()


async def test_a_request_that_would_wait_too_long_is_refused_before_vllm_sees_it() -> None:
    engine, fake = fake_vllm(VLLMSettings(max_num_seqs=1), Clock())
    running = await started(fake, engine, ask(max_tokens=200))
    wait = engine.load().estimated_wait_s  # 200 steps at the 50 ms prior, and a first token
    assert wait == pytest.approx(200 * 0.05 + FIRST_TOKEN_PRIOR_S)
    with pytest.raises(EngineBusy) as busy:
        await anext(engine.generate(ask(limit=2.0)))
    assert busy.value.retry_after_s == pytest.approx(wait)
    assert len(fake.requests) == 1
    patient = await started(fake, engine, ask(limit=wait + 1))
    assert len(fake.requests) == 2 and engine.load().queued == 1
    for deltas, first in (running, patient):
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await deltas.aclose()


async def test_a_full_queue_refuses_even_a_request_without_a_limit() -> None:
    engine, fake = fake_vllm(VLLMSettings(max_num_seqs=1, max_queued=1), Clock())
    streams = [await started(fake, engine, ask()) for _ in range(2)]
    with pytest.raises(EngineBusy, match="1 requests wait for 1 sequences"):
        await anext(engine.generate(ask()))
    for deltas, first in streams:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await deltas.aclose()


async def test_the_priority_and_sampling_reach_vllm() -> None:
    engine, fake = fake_vllm(VLLMSettings(), Clock())
    deltas, first = await started(fake, engine, ask(max_tokens=1, priority=3))
    fake.requests[0].release()
    assert (await first).finish_reason == "length"
    assert [d async for d in deltas] == [] and engine.load().busy == 0
    (request,) = fake.requests
    assert request.priority == -3  # vLLM serves lower values first
    assert request.sampling["max_tokens"] == 1 and request.sampling["json"] is None
    assert request.prompt.endswith("<assistant>")
