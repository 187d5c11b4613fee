"""Which slot a request takes, and what it computes there (deployments/llm/jobs.py), on token lists
alone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from core.generation import GenerationParams
from core.tiers import PRIORITY
from deployments.llm.jobs import (
    Job,
    Request,
    Slot,
    choose_slot,
    common_prefix,
    kept_prefix,
    park_for,
    plan_step,
    steps_left,
    to_compute,
)

LESSON_A = list(range(100, 400))  # class a's lesson, as tokens
LESSON_C = list(range(500, 800))


def test_a_request_takes_the_slot_that_holds_its_prefix() -> None:
    slots = [Slot(0, cached=[*LESSON_C, 1]), Slot(1, cached=[*LESSON_A, 2])]
    assert choose_slot([*LESSON_A, 3], slots, slots, waiting=[]) is slots[1]


def test_another_class_leaves_the_lesson_that_waiting_followers_need() -> None:
    """Neither free slot shares anything with class b's prompt: it takes the one no waiting
    request wants, not class a's lesson, which a's follower is waiting to copy."""
    slots = [Slot(0, cached=[*LESSON_A, 1]), Slot(1, cached=[*LESSON_C, 1])]
    follower = [*LESSON_A, 7, 8]
    assert choose_slot([9, 9, 9], slots, slots, waiting=[follower]) is slots[1]
    assert choose_slot([9, 9, 9], slots, slots, waiting=[[*LESSON_C, 4]]) is slots[0]


def test_a_second_copy_of_a_lesson_goes_before_the_last_one() -> None:
    """Class a's lesson is in two slots (one running, one free), class c's in one free slot; both
    classes have followers waiting: the free copy of a's lesson is the one to lose."""
    running = Slot(0, cached=[*LESSON_A, 5])
    free = [Slot(1, cached=[*LESSON_C, 1]), Slot(2, cached=[*LESSON_A, 1])]
    waiting = [[*LESSON_A, 7], [*LESSON_C, 7]]
    assert choose_slot([9, 9, 9], free, [running, *free], waiting) is free[1]


def test_a_common_prefix_is_counted_token_by_token() -> None:
    assert [common_prefix([*LESSON_A[:n], 0], LESSON_A) for n in (0, 1, 150, 299)] == [
        0, 1, 150, 299]
    assert common_prefix(LESSON_A, LESSON_A[:120]) == 120
    assert common_prefix([], LESSON_A) == 0


def test_a_request_computes_what_no_cache_holds_and_at_least_its_last_token() -> None:
    slots = [Slot(0, cached=[*LESSON_A, 1]), Slot(1)]
    assert to_compute([*LESSON_A, 5, 6], slots) == 2
    assert to_compute(LESSON_A, slots) == 1
    assert to_compute([9] * 40, slots) == 40


def test_a_cut_keeps_the_lesson_a_waiting_request_wants() -> None:
    """Class a's slot is cut for class c: the lesson a's follower waits for is kept (the lesson,
    not the answer after it); nothing when no one waits for it, when the cut keeps it anyway,
    or when another cache holds it."""
    cached = [*LESSON_A, 1, 2, 3]
    follower = [*LESSON_A, 7, 8]
    assert kept_prefix(cached, 0, [], [follower]) == len(LESSON_A)
    assert kept_prefix(cached, 0, [], [[*LESSON_C, 7]]) == 0
    assert kept_prefix(cached, len(LESSON_A), [], [follower]) == 0
    assert kept_prefix(cached, 0, [Slot(1, cached=[*LESSON_A, 9])], [follower]) == 0


def test_a_lesson_is_parked_in_an_empty_park_else_in_one_no_one_waits_for() -> None:
    parks = [Slot(8, cached=[*LESSON_C, 1]), Slot(9)]
    assert park_for(parks, [[*LESSON_C, 7]], spare=Slot(0)) is parks[1]
    assert park_for(parks, [[*LESSON_C, 7]], spare=parks[1]) is None  # the one copied from next
    parks[1].cached = [*LESSON_A, 1]
    assert park_for(parks, [[*LESSON_C, 7]], spare=Slot(0)) is parks[1]  # a's lesson: no one waits
    assert park_for(parks, [[*LESSON_C, 7], [*LESSON_A, 7]], spare=Slot(0)) is None
    assert park_for([], [], spare=Slot(0)) is None


def running(seq: int, tier: str, prompt: int, fed: int, order: int, next_token: int | None = None
            ) -> Slot:
    """A slot whose request (of `tier`, admitted `order`th) has read `fed` of its `prompt` tokens."""
    params = GenerationParams(messages=[], max_tokens=8, priority=PRIORITY[tier])  # type: ignore[index]
    request = Request(list(range(prompt)), params, None, 0, emit=print, budget=8, order=order)
    job: Any = Job(request, sampler=None, output=None, fed=fed, next_token=next_token)  # type: ignore[arg-type]
    return Slot(seq, cached=list(range(fed)), job=job)


def test_lower_tiers_read_at_most_prefill_chunk_prompt_tokens_a_step_in_all() -> None:
    """Three background prompts being read beside two answers: 16 tokens in all this step, the
    earliest admitted first, so that a step an exam arrives during ends soon."""
    slots = [running(0, "background", 200, 0, order=3), running(1, "background", 200, 190, order=1),
             running(2, "background", 200, 0, order=2), running(3, "interactive", 50, 50, 0, 7),
             running(4, "background", 50, 50, 0, 8)]
    plan = plan_step(slots, n_batch=512, prefill_chunk=16)
    assert [(s.seq, len(tokens)) for s, tokens, _ in plan] == [(3, 1), (4, 1), (1, 10), (2, 6)]
    assert [wants for _, _, wants in plan] == [True, True, True, False]  # slot 1 ends its prompt


def test_a_long_prompt_admitted_first_does_not_hold_back_the_short_ones() -> None:
    """A learner's 4,000-token prompt and two 20-token ones admitted after it: the short ones are
    read first, the long one with what is left of the step."""
    slots = [running(0, "interactive", 4000, 0, order=1), running(1, "interactive", 20, 0, order=2),
             running(2, "interactive", 20, 0, order=3)]
    plan = plan_step(slots, n_batch=512, prefill_chunk=32)
    assert [(s.seq, len(tokens)) for s, tokens, _ in plan] == [(1, 20), (2, 12)]
    slots[1].job.fed = 20  # type: ignore[union-attr]
    slots[1].job.next_token = 5  # type: ignore[union-attr]
    slots[2].job.fed = 12  # type: ignore[union-attr]
    plan = plan_step(slots, n_batch=512, prefill_chunk=32)
    assert [(s.seq, len(tokens)) for s, tokens, _ in plan] == [(1, 1), (2, 8), (0, 24)]


def test_an_exam_reads_its_whole_prompt_in_a_step_of_its_own() -> None:
    """An assessment reading its prompt: n_batch for it, nothing for the lower tiers, and their
    answers wait a step; another assessment's answer goes on."""
    slots = [running(0, "background", 200, 0, order=1), running(1, "assessment", 300, 0, order=2),
             running(2, "background", 50, 50, 0, 7), running(3, "assessment", 20, 20, 0, 9)]
    plan = plan_step(slots, n_batch=512, prefill_chunk=16)
    assert [(s.seq, len(tokens)) for s, tokens, _ in plan] == [(3, 1), (1, 300)]


def test_a_slot_frees_up_after_its_answer_and_its_unread_prompt_in_chunks() -> None:
    slot = running(0, "background", 200, 100, order=1)
    slot.job.output = SimpleNamespace(generated=3)  # type: ignore[union-attr]
    assert steps_left(slot.job, chunk=32) == (8 - 3) + 4  # 100 unread: 4 steps of 32
    assert steps_left(None, chunk=32) == 0  # a free slot
