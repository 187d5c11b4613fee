"""Continuous batching over one llama.cpp context: many sequences decoded together, each in a slot.

One thread owns the context. Each step it admits waiting requests into free slots, builds one batch
of every running sequence's next token plus chunks of the prompts still being read, decodes it, and
samples each sequence that produced logits with that sequence's own sampler. A sequence that
finishes, fails or is cancelled frees its slot before the next step; new requests join between steps.

Prefixes are shared (deployments/llm/sequences.py): a slot keeps the tokens of its last request
when it is idle; a new request takes the free slot whose cache shares the longest prefix with its
prompt and copies a longer one's cells from any sequence; a prefix waiting requests want is parked
before a slot's cache is cut. A request whose prompt shares a long prefix with a prompt still being
read waits until that prefix is in the cache, so a class arriving at once computes its lesson once.

Requests wait by priority (GenerationParams.priority, the request's tier: core/tiers.py), strictly;
within a priority the groups waiting (GenerationParams.group, a class) share the slots by deficit
round robin over estimated tokens (deployments/llm/fairqueue.py), so one class's burst does not
starve another's. `reserved` slots are kept for the assessment tier: a lower tier starts only while
more slots are free than the reserve still owed, so an exam never waits for a background answer to
end; while a higher tier reads its prompt, lower tiers read none in the same step, and they read at
most `prefill_chunk` prompt tokens a step in all, so a step that an assessment arrives during ends
soon (deployments/llm/jobs.py: plan_step).

A request whose expected time to its first token exceeds its limit is refused at once (EngineBusy)
so the router can send it elsewhere: the wait for a slot, behind the requests expected to start
before it, or for the prompts ahead of it to be read, then reading its own, every step of which
also decodes the running answers (deployments/llm/pace.py: measured as it runs, and as the replica
starts; an idle replica that refuses measures again). A full queue sheds a request of the lowest
priority below the newcomer's (the latest of the group waiting with the most tokens)."""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from core.generation import Delta, EngineBusy, EngineLoad
from deployments.llm.fairqueue import FairQueue
from deployments.llm.jobs import (
    ASSESSMENT,
    FINISHED,
    Job,
    Plan,
    Request,
    Slot,
    choose_slot,
    fill,
    logit_index,
    plan_step,
    prefix_in_progress,
    steps_left,
    to_compute,
    unread,
)
from deployments.llm.output import Output
from deployments.llm.pace import Pace
from deployments.llm.sampling import Sampler
from deployments.llm.sequences import Sequences

log = logging.getLogger("ray.serve")
CALIBRATION_TOKENS = 64  # the prompt a replica reads as it starts, to measure its pace
RECALIBRATE_S = 5.0  # an idle replica's pace is measured again at most this often


class Scheduler:
    def __init__(self, model: Any, ctx: Any, *, parallel: int, n_batch: int, max_queued: int,
                 detokenize: Callable[[int], bytes], repeat_penalty: float, reserved: int = 0,
                 prefill_chunk: int | None = None, parked: int = 0):
        from llama_cpp import llama_cpp as lib

        self._lib, self._ctx = lib, ctx
        self._vocab = lib.llama_model_get_vocab(model)
        self._n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._n_batch = n_batch
        self._prefill_chunk = prefill_chunk or n_batch  # lower tiers' prompt tokens a step, in all
        self._reserved = reserved  # slots kept for the assessment tier
        self._cache = Sequences(lib, ctx, parallel=parallel, parked=parked)
        self._slots, self._holders = self._cache.slots, self._cache.holders
        self._max_queued = max_queued
        self._detokenize = detokenize
        self._repeat_penalty = repeat_penalty
        self._waiting: FairQueue[Request] = FairQueue()
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._pace = Pace()
        self._calibrated: float | None = None  # when; None: due (at start, or asked for)
        self._computed = 0  # prompt tokens
        self._thread = threading.Thread(target=self._loop, name="llama.cpp", daemon=True)
        self._thread.start()

    # -- the event loop's side -------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("llama.cpp engine is closed")
            limit = request.params.max_queue_wait_s
            load = self._load()
            request.unread = unread(request.tokens, self._holders, self._waiting)
            busy = f"{load.queued} requests wait for {load.slots} slots"
            expected = self._first_token_s(request) if limit is not None else 0.0
            if limit is not None and expected > limit:
                self._stale(load)
                raise EngineBusy(f"first token expected in {expected:.1f} s, over its {limit:g} s "
                                 f"({busy})", retry_after_s=max(1.0, load.estimated_wait_s))
            if (load.busy == len(self._slots) and len(self._waiting) >= self._max_queued
                    and not self._shed(request)):
                raise EngineBusy(busy, retry_after_s=max(1.0, load.estimated_wait_s))
            request.order = next(self._order)
            self._waiting.push(request)
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

    def _first_token_s(self, request: Request) -> float:
        """The expected time to the first token of `request` arriving now, on the high side: it
        waits for a slot (behind the waiting requests expected to start before it: every higher
        tier's, its fair share of its own tier's) while the prompts ahead of it are read (what the
        running and waiting requests of its tier or higher compute), then reads its own; every step
        that reads also decodes the running answers."""
        priority = request.priority
        ahead = sum(len(s.job.request.tokens) - s.job.fed for s in self._slots
                    if isinstance(s.job, Job) and s.job.request.priority >= priority)
        ahead += sum(r.unread for r in self._waiting if r.priority >= priority and r is not request)
        slot = self._expected_wait(self._waiting.ahead(priority, request.group, request.cost),
                                   priority)
        return self._pace.first_token(
            slot, ahead, request.unread, sum(1 for s in self._slots if s.job is not None),
            self._n_batch if priority >= ASSESSMENT else self._prefill_chunk)

    def _stale(self, load: EngineLoad) -> None:
        """An idle replica refused a request: its pace, measured when the machine may have been
        busier, is measured again (at most every RECALIBRATE_S), so that it does not go on refusing
        what it no longer sees itself serve."""
        if not load.busy and not load.queued and self._calibrated is not None \
                and time.monotonic() - self._calibrated > RECALIBRATE_S:
            self._calibrated = None
            self._cond.notify()

    def _shed(self, request: Request) -> bool:
        """In a full queue, a waiting request of the lowest priority below `request`'s leaves it
        (refused as busy: the router serves it elsewhere or answers 429), so that background work
        is shed before interactive and nothing is shed for an equal priority."""
        victim = self._waiting.victim(request.priority)
        if victim is None:
            return False
        self._waiting.remove(victim)
        victim.emit(EngineBusy("shed for a request of a higher priority tier",
                               retry_after_s=max(1.0, self._expected_wait(len(self._waiting),
                                                                          victim.priority))))
        victim.emit(FINISHED)
        return True

    def _load(self) -> EngineLoad:
        busy = sum(1 for s in self._slots if s.job is not None)
        queued = len(self._waiting)
        return EngineLoad(queued, busy, len(self._slots), self._expected_wait(queued, ASSESSMENT),
                          self._computed, self._cache.reused)

    def _expected_wait(self, ahead: int, priority: int) -> float:
        """How long a request with `ahead` requests queued before it waits for a slot, on the high
        side: running answers are taken to run to their max_tokens, at the measured step time; a
        free slot goes to the first request waiting, the first ones to free up below the assessment
        tier to the reserve it is still owed."""
        steps = sorted(steps_left(s.job, self._prefill_chunk) for s in self._slots)
        if priority < ASSESSMENT:
            steps = steps[self._reserve_owed():]
        return self._pace.slot_wait(steps, ahead, max((r.budget for r in self._waiting),
                                                      default=steps[-1]), len(self._slots))

    # -- the decoding thread ---------------------------------------------------------------------

    def _calibrate(self) -> None:
        """Read a short prompt twice (the first warms the weights up), then decode one token after
        it, in the idle slot that caches least, forgotten after: estimates are measured, not
        priors or the pace of a busier time."""
        self._calibrated = time.monotonic()
        slot = min(self._slots, key=lambda s: len(s.cached))
        tokens, took = list(range(CALIBRATION_TOKENS)), []
        for chunk in (tokens, tokens, tokens[:1]):
            slot.cached = list(tokens) if len(chunk) == 1 else []
            self._cache.cut(slot, len(slot.cached))
            started = time.monotonic()
            if self._lib.llama_decode(self._ctx, fill(self._batch, [(slot, chunk, True)])) != 0:
                break
            took.append(time.monotonic() - started)
        self._cache.clear(slot)
        if len(took) == 3:
            self._pace.calibrated(took[1], len(tokens), took[2])

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running() \
                        and self._calibrated is not None:
                    self._cond.wait()
                if self._closed:
                    break
                calibrate = self._calibrated is None and not self._running()
                admitted = [] if calibrate else self._admit()
                wanted = [r.tokens for r in self._waiting] + [r.tokens for _, r in admitted]
            if calibrate:
                self._guarded(self._calibrate, [])
                continue
            for slot, request in admitted:
                self._start(slot, request, wanted)
            self._guarded(self._step, self._slots)
        for slot in self._slots:
            if slot.job is not None:
                self._finish(slot, "cancelled")
        for request in list(self._waiting):
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
        """Waiting requests that can start now, in the fair queue's order; the rest keep waiting."""
        idle, owed = sum(1 for s in self._slots if s.job is None), self._reserve_owed()
        for waiting in list(self._waiting):  # full: no slot it may take (the reserve is not theirs)
            if self._dropped(waiting, full=idle <= (0 if waiting.priority >= ASSESSMENT else owed)):
                self._waiting.remove(waiting)
        admitted: list[tuple[Slot, Request]] = []
        while free := [s for s in self._slots if s.job is None]:  # an admitted slot holds a placeholder
            may_start = functools.partial(self._may_start, free=len(free),
                                          starting=[r for _, r in admitted])
            request = self._waiting.take(may_start)
            if request is None:
                break
            slot = choose_slot(request.tokens, free, self._holders,
                               [r.tokens for r in self._waiting])
            self._waiting.charge(request, self._pace.as_answer_tokens(  # its prompt, as it reads
                to_compute(request.tokens, self._holders)))
            admitted.append((slot, request))
            slot.job = _PLACEHOLDER  # taken
        return admitted

    def _may_start(self, request: Request, *, free: int, starting: list[Request]) -> bool:
        """Whether `request` may take one of `free` slots now (`starting`: the requests just given
        one): an assessment may, a lower tier while more slots are free than the reserve still
        owed; and none while a prompt that shares its prefix is being read."""
        return (request.priority >= ASSESSMENT or free > self._reserve_owed(starting)) \
            and not prefix_in_progress(request, starting, self._holders)

    def _reserve_owed(self, starting: Sequence[Request] = ()) -> int:
        """Reserved slots the assessment tier does not hold: kept free of lower tiers."""
        held = sum(1 for s in self._slots if isinstance(s.job, Job)
                   and s.job.request.priority >= ASSESSMENT)
        held += sum(1 for r in starting if r.priority >= ASSESSMENT)
        return max(0, self._reserved - held)

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

    def _start(self, slot: Slot, request: Request, wanted: list[list[int]]) -> None:
        slot.job = None
        try:
            sampler = Sampler(self._vocab, self._n_vocab, temperature=request.params.temperature,
                              top_p=request.params.top_p, repeat_penalty=self._repeat_penalty,
                              seed=request.seed, grammar=request.grammar)
            fed = self._cache.reuse(slot, request.tokens, wanted)
        except Exception as error:  # GrammarRefused, or the engine's own failure
            request.emit(error)
            request.emit(FINISHED)
            return
        output = Output(request.params, len(request.tokens), request.budget, self._detokenize)
        slot.job = Job(request, sampler, output, fed)

    def _step(self) -> None:
        jobs = [(s, s.job) for s in self._slots if s.job is not None and s.job is not _PLACEHOLDER]
        for slot, running in jobs:
            if running.request.cancelled:
                self._finish(slot, "cancelled")
        plan = plan_step(self._slots, self._n_batch, self._prefill_chunk)
        if not plan:
            return
        started = time.monotonic()
        status = self._lib.llama_decode(self._ctx, fill(self._batch, plan))
        answers = sum(1 for s, _, _ in plan if isinstance(s.job, Job) and s.job.next_token is not None)
        read = sum(len(tokens) for _, tokens, _ in plan) - answers
        self._pace.measured(time.monotonic() - started, read, answers)
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
                self._sample(slot, job, logit_index(plan, index))

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

    def _release(self, slot: Slot, job: Job, last: Delta | BaseException | None) -> None:
        """The job's last item (its final delta, or its error), its end, its slot freed, and what
        the budget its answer did not use credited back to its group's share."""
        if last is not None:
            job.request.emit(last)
        job.request.emit(FINISHED)
        job.sampler.close()
        slot.job = None
        with self._cond:
            self._waiting.charge(job.request, job.output.generated - job.request.budget)

    def _decode_failed(self, plan: Plan, status: int) -> None:
        """No room in the KV cache (1): drop the parked prefixes, else idle slots' caches, and try
        again next step; if none is left to drop, the newest sequence fails. Any other status fails
        every sequence in the batch."""
        if status == 1 and self._cache.drop_idle():
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
        self._cache.clear(slot)


_PLACEHOLDER: Any = object()
