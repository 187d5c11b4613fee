"""A vLLM replica's load as its wrapper sees it: the requests in flight, which of them produce tokens
and which still wait for their first, the measured time to a first token (of requests that found a
sequence free) and between tokens (a decoding step, every running sequence advancing by one).

vLLM runs at most `max_num_seqs` sequences (its slots) and queues the rest by priority. A request
arriving while a slot is free is expected to wait the measured first-token time; otherwise, first
for a slot: as in llama.cpp's scheduler (deployments/llm/batching.py), the running answers are taken
to run to their max_tokens, at the measured step time, and a freed slot goes to the first request
waiting (by priority, then arrival). A request that would wait past its max_queue_wait_s, or that
finds `max_queued` requests already waiting, is refused at once (EngineBusy) so the router can hand
it to the next candidate (unlike llama.cpp's, a full queue sheds no lower-tier request that
already waits: vLLM holds it). What vLLM's scheduler does beyond that (a request waiting for KV
blocks, preemption) shows in the measured first-token time, not in the count."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.generation import EngineBusy, EngineLoad, GenerationParams
from deployments.llm.pace import Pace

FIRST_TOKEN_PRIOR_S = 0.1  # a first token's time until one is measured


@dataclass
class Flight:
    """One request in flight: its place in vLLM's queue, its budget and what it produced so far."""

    priority: int
    order: int
    max_tokens: int
    started: float
    free_slot: bool  # a sequence was free when it arrived: its first token measures prefill alone
    produced: int = 0
    last: float = 0.0  # when its last tokens came


class VLLMLoad:
    def __init__(self, slots: int, max_queued: int, clock: Callable[[], float] = time.monotonic):
        self._slots = slots
        self._max_queued = max_queued
        self._clock = clock
        self._flights: list[Flight] = []
        self._order = itertools.count()
        self._pace = Pace()
        self.first_token_s = FIRST_TOKEN_PRIOR_S

    def admit(self, params: GenerationParams) -> Flight:
        """Count `params` in flight, or refuse it (EngineBusy) when it would wait past its limit or
        the queue is full."""
        load = self.load()
        wait = self.wait_s(params.priority)
        limit = params.max_queue_wait_s
        if (limit is not None and wait > limit) or load.queued >= self._max_queued:
            raise EngineBusy(f"{load.queued} requests wait for {load.slots} sequences",
                             retry_after_s=max(1.0, load.estimated_wait_s))
        flight = Flight(params.priority, next(self._order), params.max_tokens, self._clock(),
                        free_slot=len(self._flights) < self._slots)
        self._flights.append(flight)
        return flight

    def produced(self, flight: Flight, tokens: int) -> None:
        """`flight` has produced `tokens` answer tokens in all (vLLM's cumulative count)."""
        now, new = self._clock(), tokens - flight.produced
        if new <= 0:
            return
        if flight.produced == 0:
            if flight.free_slot:
                self.first_token_s = 0.9 * self.first_token_s + 0.1 * (now - flight.started)
        else:
            self._pace.measured((now - flight.last) / new, read=0, answers=1)
        flight.produced, flight.last = tokens, now

    def done(self, flight: Flight) -> None:
        self._flights.remove(flight)

    def load(self) -> EngineLoad:
        running, waiting = self._split()
        return EngineLoad(len(waiting), len(running), self._slots,
                          self._slot_wait(running, waiting, len(waiting)) + self.first_token_s)

    def wait_s(self, priority: int) -> float:
        """The expected time to its first token of a request of `priority` arriving now: the wait
        for a slot behind the requests waiting at its priority or above, then its first token."""
        running, waiting = self._split()
        ahead = sum(1 for f in waiting if f.priority >= priority)
        return self._slot_wait(running, waiting, ahead) + self.first_token_s

    def _split(self) -> tuple[list[Flight], list[Flight]]:
        """The requests taken to run (those producing tokens, then the first of the rest by
        priority and arrival, up to the slots) and those waiting for a slot."""
        flights = sorted(self._flights, key=lambda f: (f.produced == 0, -f.priority, f.order))
        return flights[:self._slots], flights[self._slots:]

    def _slot_wait(self, running: list[Flight], waiting: list[Flight], ahead: int) -> float:
        if len(running) < self._slots:
            return 0.0
        steps = sorted(max(0, f.max_tokens - f.produced) for f in running)
        whole = max((f.max_tokens for f in waiting), default=steps[-1])
        return self._pace.slot_wait(steps, ahead, whole, answers=1)  # measured per sequence

    @property
    def step_s(self) -> float:
        """The measured time between a sequence's tokens."""
        return self._pace.decode_at(1)
