"""Continuous batching over one llama.cpp context: many sequences decoded together, each in a slot.

One thread owns the context. Each step it admits waiting requests into free slots, builds one batch
of every running sequence's next token plus chunks of the prompts still being read, decodes it, and
samples each sequence that produced logits with that sequence's own sampler. A sequence that
finishes, fails or is cancelled frees its slot before the next step; new requests join between steps.

Prefixes are shared. The KV cache is unified: a slot keeps the tokens of its last request when it
is idle, and a new request takes the free slot whose cache shares the longest prefix with its prompt,
or, when another slot (running or idle) shares a longer one, a copy of that slot's cells
(`llama_memory_seq_cp`, which shares the cells rather than recomputing them). A request whose prompt
shares a long prefix with a prompt still being read waits until that prefix is in the cache, so a
class arriving at once computes its lesson once.

Requests wait in order of their priority, then arrival (GenerationParams.priority, the request's
tier: core/tiers.py); a request whose expected wait (behind the waiting requests of its priority or
higher) exceeds its limit is refused at once (EngineBusy) so the router can send it elsewhere. A
full queue sheds its latest request of the lowest priority for a request of a higher one."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.generation import Delta, EngineBusy, EngineLoad, GenerationParams
from deployments.llm.output import Output
from deployments.llm.sampling import Sampler

log = logging.getLogger("ray.serve")
Emit = Callable[[Any], object]
FINISHED = object()  # emitted after a sequence's last delta or error
SHARE_MIN = 32  # a prefix shorter than this is recomputed rather than waited for
STEP_PRIOR_S = 0.05  # a decoding step's time until one is measured


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


class Scheduler:
    def __init__(self, model: Any, ctx: Any, *, parallel: int, n_batch: int, max_queued: int,
                 detokenize: Callable[[int], bytes], repeat_penalty: float):
        from llama_cpp import llama_cpp as lib

        self._lib, self._ctx = lib, ctx
        self._memory = lib.llama_get_memory(ctx)
        self._vocab = lib.llama_model_get_vocab(model)
        self._n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._n_batch = n_batch
        self._slots = [Slot(seq) for seq in range(parallel)]
        self._max_queued = max_queued
        self._detokenize = detokenize
        self._repeat_penalty = repeat_penalty
        self._waiting: list[Request] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._step_s = STEP_PRIOR_S  # moving average of a decoding step's time
        self._computed = self._reused = 0  # prompt tokens
        self._thread = threading.Thread(target=self._loop, name="llama.cpp", daemon=True)
        self._thread.start()

    # -- the event loop's side -------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("llama.cpp engine is closed")
            limit = request.params.max_queue_wait_s
            load = self._load()
            wait = self._wait_s(request.params.priority)
            if ((limit is not None and wait > limit) or (load.busy == len(self._slots) and
                    len(self._waiting) >= self._max_queued and not self._shed(request))):
                raise EngineBusy(f"{load.queued} requests wait for {load.slots} slots",
                                 retry_after_s=max(1.0, load.estimated_wait_s))
            request.order = next(self._order)
            self._waiting.append(request)
            self._cond.notify()

    def load(self) -> EngineLoad:
        with self._cond:
            return self._load()

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        self._lib.llama_batch_free(self._batch)

    def _wait_s(self, priority: int) -> float:
        """The expected wait for a slot of a request of `priority` arriving now: only the waiting
        requests of its priority or higher go before it."""
        return self._expected_wait(sum(1 for r in self._waiting if r.params.priority >= priority))

    def _shed(self, request: Request) -> bool:
        """In a full queue, the latest waiting request of the lowest priority below `request`'s
        leaves it (refused as busy: the router serves it elsewhere or answers 429), so that
        background work is shed before interactive and nothing is shed for an equal priority."""
        lower = [r for r in self._waiting if r.params.priority < request.params.priority]
        if not lower:
            return False
        victim = min(lower, key=lambda r: (r.params.priority, -r.order))
        self._waiting.remove(victim)
        victim.emit(EngineBusy("shed for a request of a higher priority tier",
                               retry_after_s=max(1.0, self._expected_wait(len(self._waiting)))))
        victim.emit(FINISHED)
        return True

    def _load(self) -> EngineLoad:
        busy = sum(1 for s in self._slots if s.job is not None)
        queued = len(self._waiting)
        return EngineLoad(queued, busy, len(self._slots), self._expected_wait(queued),
                          self._computed, self._reused)

    def _expected_wait(self, ahead: int) -> float:
        """How long a request with `ahead` requests queued before it waits for a slot, on the high
        side: running answers are taken to run to their max_tokens, at the measured step time; a
        free slot goes to the first request waiting."""
        steps = sorted(_steps_left(s.job) for s in self._slots)
        rounds, index = divmod(ahead, len(steps))
        whole = max((r.budget for r in self._waiting), default=steps[-1])
        return (steps[index] + rounds * whole) * self._step_s

    # -- the decoding thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running():
                    self._cond.wait()
                if self._closed:
                    break
                admitted = self._admit()
            for slot, request in admitted:
                self._start(slot, request)
            self._guarded(self._step, self._slots)
        for slot in self._slots:
            if slot.job is not None:
                self._finish(slot, "cancelled")
        for request in self._waiting:
            request.emit(RuntimeError("llama.cpp engine is closed"))
            request.emit(FINISHED)

    def _guarded(self, work: Callable[[], None], slots: list[Slot]) -> None:
        """Run `work`; if it fails (a bug, an engine error), the sequences of `slots` fail with it
        and the thread goes on serving the others."""
        try:
            work()
        except Exception as error:
            log.exception("llama.cpp decoding step failed")
            for slot in slots:
                if slot.job is not None:
                    self._fail(slot, error)

    def _running(self) -> bool:
        return any(s.job is not None for s in self._slots)

    def _admit(self) -> list[tuple[Slot, Request]]:
        """Waiting requests that can start now, by priority then arrival; the rest keep waiting."""
        full = all(s.job is not None for s in self._slots)
        self._waiting = [r for r in self._waiting if not self._dropped(r, full)]
        self._waiting.sort(key=lambda r: (-r.params.priority, r.order))
        admitted: list[tuple[Slot, Request]] = []
        for request in list(self._waiting):
            free = [s for s in self._slots if s.job is None]  # an admitted slot holds a placeholder
            if not free:
                break
            if self._prefix_in_progress(request):
                continue
            slot = max(free, key=lambda s: _shared(s.cached, request.tokens))
            self._waiting.remove(request)
            admitted.append((slot, request))
            slot.job = _PLACEHOLDER  # taken
        return admitted

    def _dropped(self, request: Request, full: bool) -> bool:
        """Cancelled, or waited for a slot past its limit (the estimate was short): it is refused
        now. Waiting for a shared prefix being read, with a slot free, is not waiting for a slot."""
        limit = request.params.max_queue_wait_s
        if not request.cancelled and full and limit is not None \
                and time.monotonic() - request.arrived > limit:
            request.emit(EngineBusy(f"no slot within {limit:g} s", retry_after_s=1.0))
            request.cancel()
        if request.cancelled:
            request.emit(FINISHED)
        return request.cancelled

    def _prefix_in_progress(self, request: Request) -> bool:
        """Another slot is reading a prompt that shares more with this one than any cache holds."""
        cached = max(_shared(s.cached, request.tokens) for s in self._slots)
        for slot in self._slots:
            job = slot.job
            if job is not None and job is not _PLACEHOLDER and job.fed < len(job.request.tokens):
                shared = min(_shared(job.request.tokens, request.tokens), len(request.tokens) - 1)
                if shared - cached >= SHARE_MIN:
                    return True
        return False

    def _start(self, slot: Slot, request: Request) -> None:
        slot.job = None
        try:
            sampler = Sampler(self._vocab, self._n_vocab, temperature=request.params.temperature,
                              top_p=request.params.top_p, repeat_penalty=self._repeat_penalty,
                              seed=request.seed, grammar=request.grammar)
            fed = self._reuse(slot, request.tokens)
        except Exception as error:  # GrammarRefused, or the engine's own failure
            request.emit(error)
            request.emit(FINISHED)
            return
        output = Output(request.params, len(request.tokens), request.budget, self._detokenize)
        slot.job = Job(request, sampler, output, fed)

    def _reuse(self, slot: Slot, tokens: list[int]) -> int:
        """Put the longest cached prefix of `tokens` into `slot`'s sequence; how many tokens that is.
        At least the last prompt token is always decoded again: its logits start the answer."""
        limit = len(tokens) - 1
        own = min(_shared(slot.cached, tokens), limit)
        donor = max(self._slots, key=lambda s: _shared(s.cached, tokens))
        shared = min(_shared(donor.cached, tokens), limit)
        lib, memory = self._lib, self._memory
        if donor is not slot and shared > own:
            lib.llama_memory_seq_rm(memory, slot.seq, -1, -1)
            lib.llama_memory_seq_cp(memory, donor.seq, slot.seq, 0, shared)
            own = shared
        else:
            lib.llama_memory_seq_rm(memory, slot.seq, own, -1)
        slot.cached = tokens[:own]
        self._reused += own
        return own

    def _step(self) -> None:
        jobs = [(s, s.job) for s in self._slots if s.job is not None and s.job is not _PLACEHOLDER]
        for slot, running in jobs:
            if running.request.cancelled:
                self._finish(slot, "cancelled")
        plan = self._plan()
        if not plan:
            return
        started = time.monotonic()
        status = self._lib.llama_decode(self._ctx, self._fill(plan))
        self._step_s = 0.9 * self._step_s + 0.1 * (time.monotonic() - started)
        if status != 0:
            self._decode_failed(plan, status)
            return
        for index, (slot, tokens, wants_logits) in enumerate(plan):
            slot.cached.extend(tokens)
            job = slot.job
            if job is None:
                continue
            if job.next_token is None:
                job.fed += len(tokens)
                self._computed += len(tokens)
            if wants_logits:
                self._sample(slot, job, self._logit_index(plan, index))

    def _plan(self) -> list[tuple[Slot, list[int], bool]]:
        """(slot, tokens to decode, whether its last token's logits are wanted): every answer's next
        token first, then what fits of the prompts being read, in admission order."""
        plan: list[tuple[Slot, list[int], bool]] = []
        room = self._n_batch
        for slot in self._slots:
            job = slot.job
            if job is not None and job.next_token is not None:
                plan.append((slot, [job.next_token], True))
                room -= 1
        reading = sorted((s for s in self._slots if s.job is not None and s.job.next_token is None),
                         key=lambda s: s.job.request.order if s.job else 0)
        for slot in reading:
            job = slot.job
            assert job is not None
            if room <= 0:
                break
            chunk = job.request.tokens[job.fed:job.fed + room]
            plan.append((slot, chunk, job.fed + len(chunk) == len(job.request.tokens)))
            room -= len(chunk)
        return plan

    def _fill(self, plan: list[tuple[Slot, list[int], bool]]) -> Any:
        batch, n = self._batch, 0
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

    @staticmethod
    def _logit_index(plan: list[tuple[Slot, list[int], bool]], index: int) -> int:
        return sum(len(tokens) for _, tokens, _ in plan[:index + 1]) - 1

    def _sample(self, slot: Slot, job: Job, index: int) -> None:
        token = job.sampler.sample(self._ctx, index)
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, "stop")
            return
        delta, finish_reason = job.output.feed(token)
        if delta is not None:
            job.request.emit(delta)
        if finish_reason is not None:
            self._finish(slot, finish_reason)
            return
        job.next_token = token

    def _finish(self, slot: Slot, finish_reason: str) -> None:
        job = slot.job
        assert job is not None and job is not _PLACEHOLDER
        cancelled = finish_reason == "cancelled" and job.request.cancelled  # nobody reads it
        self._release(slot, job, None if cancelled else job.output.last(finish_reason))

    @staticmethod
    def _release(slot: Slot, job: Job, last: Delta | BaseException | None) -> None:
        """The job's last item (its final delta, or its error), its end, and its slot freed."""
        if last is not None:
            job.request.emit(last)
        job.request.emit(FINISHED)
        job.sampler.close()
        slot.job = None

    def _decode_failed(self, plan: list[tuple[Slot, list[int], bool]], status: int) -> None:
        """No room in the KV cache (1): drop idle slots' caches and try again next step; if none is
        left to drop, the newest sequence fails. Any other status fails every sequence in the batch."""
        idle = [s for s in self._slots if s.job is None and s.cached]
        if status == 1 and idle:
            for slot in idle:
                self._lib.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
                slot.cached = []
            return
        victims = [max((p[0] for p in plan), key=lambda s: s.job.request.order if s.job else 0)] \
            if status == 1 else [p[0] for p in plan]
        for slot in victims:
            self._fail(slot, RuntimeError(f"llama.cpp could not decode (status {status})"))

    def _fail(self, slot: Slot, error: BaseException) -> None:
        job = slot.job
        if job is not None and job is not _PLACEHOLDER:
            self._release(slot, job, error)
        slot.job = None
        self._lib.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
        slot.cached = []


_PLACEHOLDER: Any = object()


def _steps_left(job: Any) -> int:
    """Decoding steps until a running job's slot is free, at most: its answer's tokens still to
    come, and its unread prompt in chunks."""
    if not isinstance(job, Job):  # free, or just taken
        return 0
    unread = len(job.request.tokens) - job.fed
    return job.request.budget - job.output.generated + unread // 64


def _shared(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def merge_ready(items: list[Any]) -> tuple[list[Delta], BaseException | None, bool]:
    """(deltas, an error if any, whether the sequence finished) of items ready together."""
    errors = [i for i in items if isinstance(i, BaseException)]
    deltas = [i for i in items if isinstance(i, Delta)]
    return deltas, errors[0] if errors else None, FINISHED in items
