"""Many learners at once on one llama.cpp replica (the packaged SmolLM2, in process): continuous
batching, shared prefixes, the queue and its priorities, cancellation that frees a slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from core.config import LlamaCppSettings
from core.generation import EngineBusy, GenerationParams
from core.tiers import PRIORITY
from deployments.llm.batching import RECALIBRATE_S
from deployments.llm.fairqueue import QUANTUM
from deployments.llm.llamacpp import LlamaCppEngine
from models import find_local_model, resolve_gguf
from tests.deltas import collect

LESSON = " ".join(f"Cells are the unit {n} of life; each has a membrane and DNA." for n in range(40))


def engine_with(**settings: int | None) -> LlamaCppEngine:
    path = resolve_gguf(find_local_model("smollm2-135m"))
    return LlamaCppEngine(path, LlamaCppSettings(**{"n_ctx": 1024, "n_threads": 1, **settings}))


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    engine = engine_with(parallel=4)
    yield engine
    engine.close()


# Runs to its max_tokens (400: 3 s on an idle box), so it holds its slot while a test looks at the
# others; "Count from 1 to 500." ends after 51 tokens, within a busy box's exam (a flaky test).
LONG = "Write a very long story about a dragon."


def ask(text: str, **kwargs: object) -> GenerationParams:
    return GenerationParams(messages=[{"role": "user", "content": text}], **{
        "max_tokens": 24, "temperature": 0, **kwargs})  # type: ignore[arg-type]


def lesson(question: str, **kwargs: object) -> GenerationParams:
    return GenerationParams(messages=[{"role": "system", "content": LESSON},
                                      {"role": "user", "content": question}],
                            **{"max_tokens": 8, "temperature": 0, **kwargs})  # type: ignore[arg-type]


async def test_concurrent_learners_get_their_own_answers_as_if_alone(engine: LlamaCppEngine) -> None:
    questions = [ask(f"Name {n} fruits, comma separated.") for n in range(2, 8)]
    together = await asyncio.gather(*(collect(engine.generate(q)) for q in questions))
    alone = [await collect(engine.generate(q)) for q in questions]
    # Greedy answers do not depend on what else is in the batch: each row of llama.cpp's CPU
    # matrix products is computed alike whatever the batch size (measured on this model).
    assert [c.text for c in together] == [c.text for c in alone]
    assert all(c.usage == a.usage for c, a in zip(together, alone, strict=True))
    assert len({c.text for c in together}) > 1  # no text crossed streams


async def test_token_counts_stay_exact_under_batching(engine: LlamaCppEngine) -> None:
    results = await asyncio.gather(*(collect(engine.generate(ask(
        "Count from 1 to 100.", max_tokens=n))) for n in (5, 9, 13)))
    assert [r.usage.completion_tokens for r in results] == [5, 9, 13]
    assert all(r.finish_reason == "length" for r in results)


async def test_a_seed_reproduces_its_sample_whatever_ran_before(engine: LlamaCppEngine) -> None:
    """What a seed promises (README): the same text on an idle replica, whatever ran before; its
    prompt is then read from the cache, not computed again."""
    seeded = ask("Tell me a short story about a fox.", temperature=1.0, max_tokens=32, seed=99)
    first = await collect(engine.generate(seeded))
    await asyncio.gather(*(collect(engine.generate(ask(f"Write a poem about {n} stars.",
                                                       temperature=1.0))) for n in range(3)))
    again = await collect(engine.generate(seeded))
    assert again.text == first.text


async def test_a_class_computes_its_shared_lesson_once() -> None:
    engine = engine_with(parallel=4)
    try:
        questions = [lesson(f"Question {n}: what is in a cell?") for n in range(4)]
        prompt = len(engine.prompt_tokens(questions[0]))
        await asyncio.gather(*(collect(engine.generate(q)) for q in questions))
        load = engine.load()
        assert load is not None
        # Everything but the first learner's lesson was read from the cache.
        assert load.prompt_tokens_computed < prompt + 3 * 40
        assert load.prompt_tokens_reused >= 3 * (prompt - 40)
    finally:
        engine.close()


@pytest.mark.parametrize("parked", [None, 0])
async def test_a_class_waiting_its_turn_keeps_its_lesson_read(parked: int | None) -> None:
    """One slot; class a's learner reads the lesson while class b's learner and a classmate wait,
    b's first (it came first): the slot's cache is cut for b's lesson, but a's lesson is parked
    (one park a slot by default), not lost, and the classmate copies it instead of reading it
    again; with no park (parked_prefixes 0) it reads it again."""
    engine = engine_with(parallel=1, n_ctx=2048, parked_prefixes=parked)  # cells for both lessons
    try:
        other = LESSON.replace("Cells are", "Planets orbit")

        def of(group: str, text: str, n: int) -> GenerationParams:
            return GenerationParams(messages=[{"role": "system", "content": text},
                                              {"role": "user", "content": f"Question {n}?"}],
                                    max_tokens=8, temperature=0, group=group)

        read = [len(engine.prompt_tokens(of(g, t, 1))) for g, t in (("a", LESSON), ("b", other))]
        started: list[str] = []

        async def run(group: str, text: str, n: int) -> None:
            async for _ in engine.generate(of(group, text, n)):
                started.append(group)
                break

        first = asyncio.ensure_future(run("a", LESSON, 1))
        await asyncio.sleep(0.05)
        await asyncio.gather(first, run("b", other, 1), run("a", LESSON, 2))  # b's turn first
        assert started == ["a", "b", "a"]
        load = engine.load()
        assert load is not None
        again = 0 if parked is None else read[0]
        assert sum(read) + again < load.prompt_tokens_computed + 16 < sum(read) + again + 3 * 16
    finally:
        engine.close()


async def test_closing_a_stream_frees_its_slot_under_load() -> None:
    engine = engine_with(parallel=2)
    try:
        long = [engine.generate(ask("Count from 1 to 500.", max_tokens=400)) for _ in range(2)]
        await asyncio.gather(*(anext(stream) for stream in long))
        await long[0].aclose()  # what a cancelled request does
        started = time.monotonic()
        short = await asyncio.wait_for(collect(engine.generate(ask("Hi", max_tokens=3))), 30)
        assert short.usage.completion_tokens == 3
        assert time.monotonic() - started < 15  # it took the freed slot, not the 400-token wait
        await long[1].aclose()
    finally:
        engine.close()


async def test_a_full_queue_refuses_at_once_with_a_retry_after() -> None:
    engine = engine_with(parallel=1, max_queued=1)
    try:
        running = engine.generate(ask(LONG, max_tokens=400))
        await anext(running)
        # A request that may not wait that long is refused while the queue still has room ...
        with pytest.raises(EngineBusy):
            await collect(engine.generate(ask("Hey", max_tokens=2, max_queue_wait_s=0.001)))
        waiting = asyncio.ensure_future(collect(engine.generate(ask("Hi", max_tokens=2))))
        await asyncio.sleep(0.1)
        with pytest.raises(EngineBusy) as busy:  # ... and any request once it is full
            await collect(engine.generate(ask("Hello", max_tokens=2)))
        assert busy.value.retry_after_s >= 1
        await running.aclose()
        assert (await asyncio.wait_for(waiting, 30)).usage.completion_tokens == 2
    finally:
        engine.close()


async def test_a_full_queue_sheds_a_lower_tier_for_a_higher_one() -> None:
    engine = engine_with(parallel=1, max_queued=1)
    try:
        running = engine.generate(ask(LONG, max_tokens=400))
        await anext(running)
        background = asyncio.ensure_future(collect(engine.generate(ask("Hi", max_tokens=2))))
        await asyncio.sleep(0.1)
        interactive = asyncio.ensure_future(collect(engine.generate(
            ask("Hello", max_tokens=2, priority=1))))
        with pytest.raises(EngineBusy, match="shed"):
            await asyncio.wait_for(background, 30)
        with pytest.raises(EngineBusy):  # an equal priority sheds nothing
            await collect(engine.generate(ask("Hey", max_tokens=2, priority=1)))
        await running.aclose()
        assert (await asyncio.wait_for(interactive, 30)).usage.completion_tokens == 2
    finally:
        engine.close()


async def test_higher_priority_requests_start_first() -> None:
    engine = engine_with(parallel=1)
    try:
        started: list[str] = []

        async def run(name: str, priority: int) -> None:
            async for _ in engine.generate(ask("Hi", max_tokens=2, priority=priority)):
                started.append(name)
                break

        running = engine.generate(ask("Count from 1 to 500.", max_tokens=60))
        await anext(running)
        background = asyncio.ensure_future(run("background", 0))
        await asyncio.sleep(0.05)
        assessment = asyncio.ensure_future(run("assessment", 10))
        await asyncio.sleep(0.05)
        await running.aclose()
        await asyncio.wait_for(asyncio.gather(background, assessment), 30)
        assert started == ["assessment", "background"]
    finally:
        engine.close()


async def test_a_costly_grammar_does_not_hold_the_others_back(engine: LlamaCppEngine) -> None:
    """A schema near the bounds' edge (8 branches of 24 properties each) next to plain text: the
    plain answer's time stays within 3x of its time alone, plus 2 s of slack for a busy machine."""
    branch = [{"type": "object", "properties": {f"p{i}_{b}": {"type": "string"} for i in range(24)}}
              for b in range(8)]
    plain = ask("Name five colours.", max_tokens=24)
    started = time.monotonic()
    await collect(engine.generate(plain))
    alone = time.monotonic() - started
    costly = asyncio.ensure_future(collect(engine.generate(ask(
        "Answer in JSON.", max_tokens=48, json_schema={"anyOf": branch}))))
    started = time.monotonic()
    await collect(engine.generate(plain))
    beside = time.monotonic() - started
    await costly
    assert beside < 3 * alone + 2.0


def test_health_fails_once_the_decoding_thread_is_gone() -> None:
    engine = engine_with(parallel=1)
    engine.check_health()
    engine.close()
    with pytest.raises(RuntimeError, match="closed or its decoding thread died"):
        engine.check_health()



async def test_two_classes_share_the_slots_by_turns() -> None:
    """Class a asks four times, then class b twice, while the one slot is busy: b's requests start
    between a's (deficit round robin over their tokens), not after all of a's."""
    engine = engine_with(parallel=1)
    try:
        started: list[str] = []

        def request(group: str, n: int) -> GenerationParams:  # answers that run to max_tokens
            return ask(f"Learner {n} of class {group}: count from 1 to 500.", max_tokens=80,
                       group=group)

        assert QUANTUM < 80 < 2 * QUANTUM  # about a request per turn

        async def run(group: str, n: int) -> None:
            first = True
            async for _ in engine.generate(request(group, n)):
                if first:
                    started.append(group)
                    first = False

        running = engine.generate(ask("Count from 1 to 500.", max_tokens=60))
        await anext(running)
        tasks = []
        for group, n in [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1), ("b", 2)]:
            tasks.append(asyncio.ensure_future(run(group, n)))
            await asyncio.sleep(0.02)
        await running.aclose()
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        assert started == ["a", "b", "a", "b", "a", "a"]
    finally:
        engine.close()


async def test_a_reserved_slot_waits_for_an_assessment() -> None:
    engine = engine_with(parallel=2, assessment_slots=1)
    try:
        running = engine.generate(ask(LONG, max_tokens=400))
        await anext(running)
        background = asyncio.ensure_future(collect(engine.generate(ask("Hi", max_tokens=2))))
        await asyncio.sleep(0.3)
        assert not background.done()  # a slot is free, but it is the assessments'
        exam = await asyncio.wait_for(collect(engine.generate(
            ask("Hi", max_tokens=2, priority=PRIORITY["assessment"]))), 30)
        assert exam.usage.completion_tokens == 2
        assert not background.done()
        await running.aclose()
        assert (await asyncio.wait_for(background, 30)).usage.completion_tokens == 2
    finally:
        engine.close()


async def test_a_request_whose_own_prompt_takes_longer_than_its_limit_is_refused() -> None:
    """Idle, no slot to wait for: reading a long prompt (at the rate measured on another) alone
    is over a limit that a short prompt is well within (an eighth of the long one's time, so that
    the test holds on a fast machine and on a busy one)."""
    engine = engine_with(parallel=1)
    try:
        def long(lesson: str) -> str:
            return " ".join(f"Sentence {n} of lesson {lesson}." for n in range(80))

        started = time.monotonic()
        await collect(engine.generate(ask(long("A"), max_tokens=2)))
        limit = (time.monotonic() - started) / 8
        with pytest.raises(EngineBusy):
            await collect(engine.generate(ask(long("B"), max_tokens=2, max_queue_wait_s=limit)))
        short = await collect(engine.generate(ask("Hi", max_tokens=2, max_queue_wait_s=limit)))
        assert short.usage.completion_tokens == 2
    finally:
        engine.close()


async def test_an_idle_replica_that_refused_measures_its_pace_again() -> None:
    """A pace measured on a busier machine is not kept for ever: an idle replica that refuses a
    request measures itself again (at most every RECALIBRATE_S) and takes the next one."""
    engine = engine_with(parallel=1)
    try:
        await collect(engine.generate(ask("Hi", max_tokens=1)))  # measured as it started
        engine._scheduler._pace.prefill_s = 10.0  # as if measured on a machine far busier
        await asyncio.sleep(RECALIBRATE_S)
        with pytest.raises(EngineBusy, match="first token expected"):
            await collect(engine.generate(ask("Hi", max_tokens=2, max_queue_wait_s=5)))
        served = 0
        for _ in range(300):  # measured again, in the background
            try:
                answer = await collect(engine.generate(ask("Hi", max_tokens=2,
                                                           max_queue_wait_s=5)))
                served = answer.usage.completion_tokens
                break
            except EngineBusy:
                await asyncio.sleep(0.1)
        assert served == 2
    finally:
        engine.close()
