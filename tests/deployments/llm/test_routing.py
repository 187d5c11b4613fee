"""Prefix affinity across local model replicas: the hashes two prompts share, and the table that
sends a request to the replica holding its longest known prefix."""

from __future__ import annotations

from core.generation import GenerationParams
from deployments.llm.routing import BLOCK_CHARS, PrefixTable, prefix_hashes, prompt_text

LESSON = "Photosynthesis turns light into sugar. " * 40  # ~1,500 characters: 6 blocks


def chat(question: str) -> GenerationParams:
    return GenerationParams([{"role": "system", "content": LESSON},
                             {"role": "user", "content": question}], 8)


def test_prompts_share_the_hashes_of_the_blocks_they_share() -> None:
    one, two = (prefix_hashes(prompt_text(chat(q))) for q in ("Why green?", "What is ATP?"))
    shared = len(LESSON) // BLOCK_CHARS
    assert one[:shared] == two[:shared]
    assert prefix_hashes("x" + LESSON)[0] != one[0]  # a hash covers everything before it


def test_a_raw_prompt_is_its_own_text() -> None:
    assert prompt_text(GenerationParams([], 8, prompt="Once upon a time")) == "Once upon a time"
    assert prompt_text("not a request") == ""


def test_the_replica_holding_the_longest_prefix_is_chosen() -> None:
    table = PrefixTable(max_entries=1000)
    lesson_a, lesson_b = prefix_hashes(prompt_text(chat("?"))), prefix_hashes("B" * 2000)
    table.remember(lesson_a, "replica-2")
    table.remember(lesson_a[:2], "replica-1")  # a prompt that shares only its first two blocks
    table.remember(lesson_b, "replica-1")
    assert table.owner(lesson_a, {"replica-1", "replica-2"}) == "replica-2"
    assert table.owner(lesson_a, {"replica-1"}) == "replica-1"  # replica-2 is gone: the next best
    assert table.owner(prefix_hashes("C" * 2000), {"replica-1", "replica-2"}) is None


def test_the_table_forgets_the_least_recently_routed_first() -> None:
    table = PrefixTable(max_entries=4)
    old, new = prefix_hashes("o" * 1024), prefix_hashes("n" * 1024)
    table.remember(old, "replica-1")
    table.remember(new, "replica-2")
    assert table.owner(old, {"replica-1"}) is None
    assert table.owner(new, {"replica-2"}) == "replica-2"
