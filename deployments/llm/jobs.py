"""What the llama.cpp scheduler (deployments/llm/batching.py) works with: a request waiting for a
slot, the job it becomes in a slot, the slot and the tokens its sequence holds; and what the event
loop reads of a request's stream."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.generation import Delta, GenerationParams
from deployments.llm.output import Output
from deployments.llm.sampling import Sampler

Emit = Callable[[Any], object]
FINISHED = object()  # emitted after a sequence's last delta or error


@dataclass(eq=False)
class Request:
    tokens: list[int]
    params: GenerationParams
    grammar: str | None
    seed: int
    emit: Emit
    budget: int
    order: int = 0
    cancelled: bool = False
    arrived: float = field(default_factory=time.monotonic)

    @property
    def priority(self) -> int:
        return self.params.priority

    @property
    def group(self) -> str:
        return self.params.group or ""

    @property
    def cost(self) -> int:
        """Tokens its group's fair share is charged when it starts (its prompt, as it is read)."""
        return self.budget

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(eq=False)
class Job:
    request: Request
    sampler: Sampler
    output: Output
    fed: int  # prompt tokens in the cache
    next_token: int | None = None  # sampled, not yet decoded


@dataclass(eq=False)
class Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # the tokens this sequence holds, from pos 0
    job: Job | None = None


def steps_left(job: Any) -> int:
    """Decoding steps until a running job's slot is free, at most: its answer's tokens still to
    come, and its unread prompt in chunks."""
    if not isinstance(job, Job):  # free, or just taken
        return 0
    unread = len(job.request.tokens) - job.fed
    return job.request.budget - job.output.generated + unread // 64


def choose_slot(tokens: list[int], free: list[Slot], slots: list[Slot],
                waiting: list[list[int]]) -> Slot:
    """The free slot for a prompt: the one whose cache shares the most with it; of those alike,
    the one whose cache the waiting prompts would lose least by (what of their prefixes no other
    slot holds): a class's lesson stays cached for its followers while another request takes a
    slot, and a second copy of a lesson goes before the last one."""
    shared = [common_prefix(s.cached, tokens) for s in free]
    alike = [s for s, n in zip(free, shared, strict=True) if n == max(shared)]
    if len(alike) == 1 or not waiting:
        return alike[0]
    held = [[common_prefix(s.cached, w) for s in slots] for w in waiting]

    def loss(slot: Slot) -> int:
        index = slots.index(slot)
        return max(row[index] - max(row[:index] + row[index + 1:], default=0) for row in held)

    return min(alike, key=loss)


def to_compute(tokens: list[int], slots: list[Slot]) -> int:
    """The prompt tokens a request starting now computes: what no slot's cache holds, and at least
    its last token (its logits start the answer)."""
    return len(tokens) - min(max(common_prefix(s.cached, tokens) for s in slots), len(tokens) - 1)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` share from the start (by halving: slices compare in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:  # a[:low] == b[:low]; they differ by high + 1, or end
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def merge_ready(items: list[Any]) -> tuple[list[Delta], BaseException | None, bool]:
    """(deltas, an error if any, whether the sequence finished) of items ready together."""
    errors = [i for i in items if isinstance(i, BaseException)]
    deltas = [i for i in items if isinstance(i, Delta)]
    return deltas, errors[0] if errors else None, FINISHED in items
