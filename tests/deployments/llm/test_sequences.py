"""The KV cache's sequences (deployments/llm/sequences.py) over a fake of llama.cpp's memory calls
that keeps each sequence's tokens: after every change each sequence holds what its `cached` says,
so no request decodes on cells that are not its prompt's."""

from __future__ import annotations

from typing import Any

from deployments.llm.sequences import Sequences

LESSON_A = list(range(100, 400))
LESSON_B = list(range(500, 900))  # longer than a's


class FakeMemory:
    """llama_get_memory, llama_memory_seq_rm and llama_memory_seq_cp on token lists."""

    def __init__(self) -> None:
        self.seqs: dict[int, list[int]] = {}

    def llama_get_memory(self, ctx: Any) -> Any:
        return self

    def llama_memory_seq_rm(self, memory: Any, seq: int, p0: int, p1: int) -> bool:
        assert p1 == -1
        del self.seqs.setdefault(seq, [])[max(p0, 0):]
        return True

    def llama_memory_seq_cp(self, memory: Any, src: int, dst: int, p0: int, p1: int) -> None:
        assert p0 == 0 and not self.seqs.get(dst)
        self.seqs[dst] = self.seqs[src][:p1]


def sequences(parallel: int, parked: int, holding: dict[int, list[int]]) -> tuple[Sequences,
                                                                                   FakeMemory]:
    memory = FakeMemory()
    cache = Sequences(memory, None, parallel=parallel, parked=parked)
    for seq, tokens in holding.items():
        memory.seqs[seq] = list(tokens)
        cache.holders[seq].cached = list(tokens)
    return cache, memory


def consistent(cache: Sequences, memory: FakeMemory) -> bool:
    return all(memory.seqs.get(h.seq, []) == h.cached for h in cache.holders)


def test_a_waiting_lesson_is_parked_and_copied_back() -> None:
    cache, memory = sequences(1, 1, {0: [*LESSON_A, 1, 2]})
    a2, b1 = [*LESSON_A, 7], [*LESSON_B, 7]
    assert cache.reuse(cache.slots[0], b1, [a2, b1]) == 0
    assert cache.holders[1].cached == LESSON_A and consistent(cache, memory)
    memory.seqs[0] = cache.slots[0].cached = b1  # b1 read its prompt
    assert cache.reuse(cache.slots[0], a2, [a2]) == len(LESSON_A)
    assert consistent(cache, memory)


def test_the_park_a_request_copies_from_is_not_overwritten_first() -> None:
    """The slot holds b's lesson (b2 waits for it), the one park a's (a2 starts now, copying it):
    b's lesson is not parked over a's, which a2 is about to copy."""
    cache, memory = sequences(1, 1, {0: [*LESSON_B, 1], 1: LESSON_A})
    a2, b2 = [*LESSON_A, 7], [*LESSON_B, 7]
    assert cache.reuse(cache.slots[0], a2, [b2, a2]) == len(LESSON_A)
    assert memory.seqs[0] == LESSON_A and consistent(cache, memory)


def test_a_park_no_one_else_wants_is_copied_from_before_it_is_cleared() -> None:
    """The request shares fewer tokens with the park than a park is kept for: copied, then
    cleared."""
    cache, memory = sequences(1, 1, {1: [*LESSON_A[:10], 1, 2, 3]})
    request = [*LESSON_A[:10], 9, 9]
    assert cache.reuse(cache.slots[0], request, [request]) == 10
    assert memory.seqs[0] == LESSON_A[:10] and consistent(cache, memory)
    assert cache.holders[1].cached == []


def test_a_full_cache_drops_the_parks_first() -> None:
    cache, memory = sequences(1, 1, {0: [1, 2], 1: LESSON_A})
    assert cache.drop_idle()
    assert cache.holders[1].cached == [] and cache.slots[0].cached == [1, 2]
    assert cache.drop_idle() and cache.slots[0].cached == [] and not cache.drop_idle()
    assert consistent(cache, memory)
