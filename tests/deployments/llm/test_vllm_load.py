"""A vLLM replica's load as its wrapper counts it (deployments/llm/vllm_load.py), on a fake clock."""

from __future__ import annotations

import pytest

from core.generation import EngineBusy, EngineLoad, GenerationParams
from deployments.llm.vllm_load import FIRST_TOKEN_PRIOR_S, Flight, VLLMLoad
from tests.fakes.clock import Clock


def ask(max_tokens: int = 100, priority: int = 0, limit: float | None = None) -> GenerationParams:
    return GenerationParams(messages=[], max_tokens=max_tokens, priority=priority,
                            max_queue_wait_s=limit)


def stream(load: VLLMLoad, clock: Clock, flight: Flight, first_s: float, step_s: float,
           tokens: int) -> None:
    """`flight`'s first token after `first_s`, then `tokens - 1` more, one every `step_s`."""
    clock.advance(first_s)
    load.produced(flight, 1)
    for produced in range(2, tokens + 1):
        clock.advance(step_s)
        load.produced(flight, produced)


def measured(clock: Clock, first_s: float = 0.5, step_s: float = 0.02) -> VLLMLoad:
    """A load whose rates were measured: 60 answers alone, each 60 tokens."""
    load = VLLMLoad(slots=2, max_queued=4, clock=clock)
    for _ in range(60):
        flight = load.admit(ask())
        stream(load, clock, flight, first_s, step_s, 60)
        load.done(flight)
    return load


def test_below_the_slots_a_request_waits_only_for_its_first_token() -> None:
    clock = Clock()
    load = VLLMLoad(slots=2, max_queued=4, clock=clock)
    assert load.load() == EngineLoad(0, 0, 2, FIRST_TOKEN_PRIOR_S)
    load = measured(clock)
    assert load.first_token_s == pytest.approx(0.5, rel=0.01)
    assert load.step_s == pytest.approx(0.02, rel=0.01)
    load.admit(ask())
    assert load.load() == EngineLoad(0, 1, 2, load.first_token_s)


def test_with_every_slot_busy_the_wait_is_for_the_first_answer_to_end() -> None:
    clock = Clock()
    load = measured(clock)
    short, long = load.admit(ask(max_tokens=50)), load.admit(ask(max_tokens=200))
    stream(load, clock, short, 0.5, 0.02, 10)  # 40 tokens left at most
    stream(load, clock, long, 0.5, 0.02, 10)
    step, first = load.step_s, load.first_token_s
    assert load.load() == EngineLoad(0, 2, 2, pytest.approx(40 * step + first))
    waiting = load.admit(ask(max_tokens=80))
    # Behind it, the next waits for the second slot to free up (190 tokens left).
    assert load.load() == EngineLoad(1, 2, 2, pytest.approx(190 * step + first))
    load.done(short)  # vLLM starts the waiting request in the freed slot
    assert load.load() == EngineLoad(0, 2, 2, pytest.approx(80 * step + first))
    load.done(waiting)
    load.done(long)
    assert load.load() == EngineLoad(0, 0, 2, first)


def test_a_higher_priority_counts_only_what_waits_at_its_priority_or_above() -> None:
    clock = Clock()
    load = measured(clock)
    for _ in range(2):
        stream(load, clock, load.admit(ask(max_tokens=100)), 0.5, 0.02, 1)
    load.admit(ask(max_tokens=100, priority=0))  # waiting
    background, interactive = load.wait_s(priority=0), load.wait_s(priority=5)
    assert interactive == pytest.approx(99 * load.step_s + load.first_token_s)
    assert background == pytest.approx(99 * load.step_s + load.first_token_s)  # second slot
    load.admit(ask(max_tokens=100, priority=0))
    assert load.wait_s(priority=5) == interactive
    assert load.wait_s(priority=0) == pytest.approx(
        (99 + 100) * load.step_s + load.first_token_s)  # a second round of the slots


def test_a_first_token_after_waiting_for_a_slot_is_not_taken_for_prefill() -> None:
    clock = Clock()
    load = VLLMLoad(slots=1, max_queued=4, clock=clock)
    load.admit(ask())
    waited = load.admit(ask())
    clock.advance(30.0)
    load.produced(waited, 1)
    assert load.first_token_s == FIRST_TOKEN_PRIOR_S


def test_a_request_that_would_wait_past_its_limit_is_refused_at_once() -> None:
    clock = Clock()
    load = measured(clock)
    for _ in range(2):
        stream(load, clock, load.admit(ask(max_tokens=200)), 0.5, 0.02, 1)
    wait = load.wait_s(priority=0)
    assert wait == pytest.approx(199 * 0.02 + 0.5, rel=0.02)
    with pytest.raises(EngineBusy) as busy:
        load.admit(ask(limit=wait - 0.1))
    assert busy.value.retry_after_s >= wait
    assert load.load().queued == 0  # not counted
    load.admit(ask(limit=wait + 0.1))
    load.admit(ask())  # no limit: it waits
    assert load.load().queued == 2


def test_a_full_queue_refuses_even_what_may_wait() -> None:
    load = VLLMLoad(slots=1, max_queued=2, clock=Clock())
    for _ in range(3):
        load.admit(ask())
    with pytest.raises(EngineBusy, match="2 requests wait for 1 sequences"):
        load.admit(ask())
