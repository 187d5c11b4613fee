"""Which slot a request takes, and what it computes there (deployments/llm/jobs.py), on token lists
alone."""

from __future__ import annotations

from deployments.llm.jobs import (
    Slot,
    choose_slot,
    common_prefix,
    kept_prefix,
    park_for,
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
