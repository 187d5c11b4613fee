"""What the llama.cpp scheduler (deployments/llm/batching.py) works with: a request waiting for a
slot, the job it becomes in a slot, the slot and the tokens its sequence holds; and what the event
loop reads of a request's stream."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.generation import Delta, GenerationParams
from core.tiers import PRIORITY
from deployments.llm.output import Output
from deployments.llm.sampling import Sampler

Emit = Callable[[Any], object]
FINISHED = object()  # emitted after a sequence's last delta or error
SHARE_MIN = 32  # a prefix shorter than this is recomputed rather than waited for


@dataclass(eq=False)
class Request:
    tokens: list[int]
    params: GenerationParams
    grammar: str | None
    seed: int
    emit: Emit
    budget: int
    order: int = 0
    unread: int = 0  # the prompt tokens it was expected to compute, counted as it arrived
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


def steps_left(job: Any, chunk: int) -> int:
    """Decoding steps until a running job's slot is free, at most: its answer's tokens still to
    come, and its unread prompt, `chunk` tokens a step."""
    if not isinstance(job, Job):  # free, or just taken
        return 0
    unread = len(job.request.tokens) - job.fed
    return job.request.budget - job.output.generated + -(-unread // chunk)


def choose_slot(tokens: list[int], free: list[Slot], slots: list[Slot],
                waiting: list[list[int]]) -> Slot:
    """The free slot for a prompt: the one whose cache shares the most with it; of those alike,
    the one whose cache the waiting prompts would lose least by (what of their prefixes no other
    of `slots`, the slots and parks, holds): a class's lesson stays cached for its followers
    while another request takes a slot, and a second copy of a lesson goes before the last one."""
    shared = [common_prefix(s.cached, tokens) for s in free]
    alike = [s for s, n in zip(free, shared, strict=True) if n == max(shared)]
    if len(alike) == 1 or not waiting:
        return alike[0]
    held = [[common_prefix(s.cached, w) for s in slots] for w in waiting]

    def loss(slot: Slot) -> int:
        index = slots.index(slot)
        return max(row[index] - max(row[:index] + row[index + 1:], default=0) for row in held)

    return min(alike, key=loss)


def wanted_of(cached: list[int], wanted: list[list[int]]) -> int:
    """The longest prefix of `cached` that one of the `wanted` prompts shares."""
    return max((common_prefix(cached, w) for w in wanted), default=0)


def kept_prefix(cached: list[int], keep: int, others: list[Slot], wanted: list[list[int]]) -> int:
    """How much of `cached`, about to be cut to its first `keep` tokens, to keep elsewhere: the
    longest prefix a waiting request shares with it, when that is SHARE_MIN or more beyond `keep`
    and no other cache (`others`) holds it; 0: nothing."""
    length = wanted_of(cached, wanted)
    if length - keep < SHARE_MIN or any(common_prefix(o.cached, cached) >= length for o in others):
        return 0
    return length


def park_for(parks: list[Slot], wanted: list[list[int]], spare: Slot) -> Slot | None:
    """The parked sequence to keep a prefix in: an empty one, else the oldest (parks are kept
    oldest first) that no waiting request wants; never `spare` (the sequence a request is about to
    copy its prompt from), nor a prefix someone waits for; None: keep nothing."""
    def free(park: Slot) -> bool:
        return park is not spare and wanted_of(park.cached, wanted) < SHARE_MIN

    return next((p for p in parks if not p.cached and p is not spare), None) \
        or next((p for p in parks if free(p)), None)


def unread(tokens: list[int], slots: list[Slot], waiting: Iterable[Request]) -> int:
    """The prompt tokens a request will compute: what no slot's cache holds and no running or
    waiting request reads before it (a class's followers copy their lesson's cells)."""
    known = [s.cached for s in slots] + [r.tokens for r in waiting] + [
        s.job.request.tokens for s in slots if isinstance(s.job, Job)]
    return max(1, len(tokens) - max(common_prefix(k, tokens) for k in known))


def prefix_in_progress(request: Request, starting: list[Request], slots: list[Slot]) -> bool:
    """Another slot is reading (or is about to read: `starting`) a prompt that shares more with
    this one than any cache holds."""
    cached = max(common_prefix(s.cached, request.tokens) for s in slots)
    reading = [s.job.request for s in slots if isinstance(s.job, Job)
               and s.job.fed < len(s.job.request.tokens)]
    for other in reading + starting:
        shared = min(common_prefix(other.tokens, request.tokens), len(request.tokens) - 1)
        if shared - cached >= SHARE_MIN:
            return True
    return False


def to_compute(tokens: list[int], slots: list[Slot]) -> int:
    """The prompt tokens a request starting now computes: what no slot's cache holds, and at least
    its last token (its logits start the answer)."""
    return len(tokens) - min(max(common_prefix(s.cached, tokens) for s in slots), len(tokens) - 1)


Plan = list[tuple[Slot, list[int], bool]]  # a step: (slot, tokens to decode, logits wanted)
ASSESSMENT = PRIORITY["assessment"]


def plan_step(slots: list[Slot], n_batch: int, prefill_chunk: int) -> Plan:
    """A decoding step: every answer's next token first, then what fits of the prompts being read,
    by priority, then the fewest tokens left to read (one learner's long prompt does not hold back
    the others' first tokens), then admission; no prompt of a tier below one being read, and at most
    `prefill_chunk` prompt tokens in all below the assessment tier, so that a step an exam arrives
    during ends soon (its wait for a step to end is most of what load adds to its first token).
    While an assessment reads its prompt, lower tiers' answers wait: the step is the exam's alone
    (and their streams, quiet, leave the machine's cores to it)."""
    running = [(s, s.job) for s in slots if isinstance(s.job, Job)]
    reading = sorted([(s, j) for s, j in running if j.next_token is None],
                     key=lambda sj: (-sj[1].request.priority,
                                     len(sj[1].request.tokens) - sj[1].fed, sj[1].request.order))
    top = reading[0][1].request.priority if reading else 0
    lowest = ASSESSMENT if top >= ASSESSMENT else 0  # of the answers decoded this step
    plan: Plan = [(s, [j.next_token], True) for s, j in running
                  if j.next_token is not None and j.request.priority >= lowest]
    room, lower = n_batch - len(plan), prefill_chunk  # lower: what the lower tiers may still read
    for slot, job in reading:
        below = job.request.priority < ASSESSMENT
        size = min(room, lower) if below else room
        if size <= 0 or job.request.priority < top:
            break
        chunk = job.request.tokens[job.fed:job.fed + size]
        plan.append((slot, chunk, job.fed + len(chunk) == len(job.request.tokens)))
        room -= len(chunk)
        lower -= len(chunk) if below else 0
    return plan


def fill(batch: Any, plan: Plan) -> Any:
    """llama.cpp's `batch` holding `plan`'s tokens, each at its position in its slot's sequence."""
    n = 0
    for slot, tokens, wants_logits in plan:
        start = len(slot.cached)
        for offset, token in enumerate(tokens):
            batch.token[n] = token
            batch.pos[n] = start + offset
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = slot.seq
            batch.logits[n] = wants_logits and offset == len(tokens) - 1
            n += 1
    batch.n_tokens = n
    return batch


def logit_index(plan: Plan, index: int) -> int:
    """Where in the batch the logits of `plan[index]`'s last token are."""
    return sum(len(tokens) for _, tokens, _ in plan[:index + 1]) - 1


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
