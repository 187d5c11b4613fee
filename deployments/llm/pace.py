"""How fast a llama.cpp replica goes, measured as it runs: a decoding step's time by the answers it
decodes, and what each prompt token read in a step adds to it. The scheduler
(deployments/llm/batching.py) counts from them how long a request arriving now waits for its first
token: for a slot, while the prompts ahead of it are read, then reading its own, every step of which
also decodes the running answers. On the high side, to refuse at once what would wait past its
limit; and what a prompt read costs a group's fair share, in answer tokens."""

from __future__ import annotations

import bisect

STEP_PRIOR_S = 0.05  # a one-answer decoding step's time until one is measured
PREFILL_PRIOR_S = 0.002  # reading one prompt token, until measured
MIN_READ = 32  # a step reading fewer prompt tokens tells little of their rate


class Pace:
    def __init__(self) -> None:
        self.decode_s: dict[int, float] = {}  # moving averages: a step reading no prompt, by answers
        self.answer_token_s = STEP_PRIOR_S  # ... its time per answer token, ...
        self.prefill_s = PREFILL_PRIOR_S  # ... and what each prompt token read adds to a step

    def measured(self, took: float, read: int, answers: int) -> None:
        """A step of `took` seconds that read `read` prompt tokens and decoded `answers` answers'
        next tokens."""
        if read == 0:
            last = self.decode_s.get(answers)
            self.decode_s[answers] = took if last is None else 0.9 * last + 0.1 * took
            self.answer_token_s = 0.9 * self.answer_token_s + 0.1 * took / max(1, answers)
        elif read >= MIN_READ:  # the more tokens read, the more the step tells
            each, weight = max(0.0, took - self.decode_at(answers)) / read, min(0.5, read / 1000)
            self.prefill_s = (1 - weight) * self.prefill_s + weight * each

    def calibrated(self, read_s: float, read: int, decode_s: float) -> None:
        """Measured as the replica starts: reading `read` prompt tokens took `read_s`, then
        decoding one answer's token `decode_s`; they replace the priors."""
        self.prefill_s = read_s / read
        self.decode_s[1] = self.answer_token_s = decode_s

    def decode_at(self, answers: int) -> float:
        """A step's time to decode `answers` answers' next tokens: as measured at that size, else
        scaled up in proportion from the nearest size measured below it (a batch costs less than
        its answers one by one, so this is on the high side), else the nearest measured above."""
        if answers <= 0:
            return 0.0
        if answers in self.decode_s:
            return self.decode_s[answers]
        sizes = sorted(self.decode_s)
        below = bisect.bisect_left(sizes, answers)
        if below:
            size = sizes[below - 1]
            return self.decode_s[size] * answers / size
        return self.decode_s[sizes[0]] if sizes else STEP_PRIOR_S * answers

    def as_answer_tokens(self, prompt_tokens: int) -> int:
        """What reading `prompt_tokens` costs the replica, in answer tokens' worth of its time (a
        prompt token read in a batch costs a fraction of one generated), at least one."""
        return max(1, round(prompt_tokens * min(1.0, self.prefill_s / self.answer_token_s)))

    def slot_wait(self, steps_left: list[int], ahead: int, whole: int, answers: int) -> float:
        """The wait for a slot behind `ahead` requests: `steps_left`, sorted, are the decoding
        steps until each slot it may take frees up (a free slot goes to the first request waiting);
        each later round of the slots takes `whole` steps; every step decodes `answers` answers."""
        rounds, index = divmod(ahead, len(steps_left))
        return (steps_left[index] + rounds * whole) * self.decode_at(max(1, answers))

    def first_token(self, slot_s: float, ahead: int, own: int, answers: int, chunk: int) -> float:
        """The time to a request's first token: it waits `slot_s` for a slot while the `ahead`
        prompt tokens before it are read (whichever is longer), then reads its `own`; prompts are
        read `chunk` tokens a step, and every step also decodes `answers` answers."""
        return max(slot_s, self.reading(ahead, answers, chunk)) + self.reading(own, answers, chunk)

    def reading(self, tokens: int, answers: int, chunk: int) -> float:
        """The time to read `tokens` prompt tokens, `chunk` a step, in steps that also decode
        `answers` answers; none read: no time."""
        steps = -(-tokens // chunk)
        return tokens * self.prefill_s + steps * self.decode_at(answers)
