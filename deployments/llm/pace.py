"""How fast a llama.cpp replica goes, measured as it runs: a decoding step's time, an answer token's
share of a step that reads no prompt, and what each prompt token read in a step adds to it. The
scheduler (deployments/llm/batching.py) counts from them how long a request arriving now waits for a
slot and then for its prompt to be read, on the high side, to refuse at once what would wait past
its limit; and what a prompt read costs a group's fair share, in answer tokens."""

from __future__ import annotations

STEP_PRIOR_S = 0.05  # a decoding step's time until one is measured
PREFILL_PRIOR_S = 0.002  # reading one prompt token, until measured
MIN_READ = 32  # a step reading fewer prompt tokens tells little of their rate


class Pace:
    def __init__(self) -> None:
        self.step_s = STEP_PRIOR_S  # moving averages: a decoding step's time, ...
        self.decode_s = STEP_PRIOR_S  # ... one that reads no prompt, ...
        self.answer_token_s = STEP_PRIOR_S  # ... its time per answer token, ...
        self.prefill_s = PREFILL_PRIOR_S  # ... and what each prompt token read adds to a step

    def measured(self, took: float, read: int, answers: int) -> None:
        """A step of `took` seconds that read `read` prompt tokens and decoded `answers` answers'
        next tokens."""
        self.step_s = 0.9 * self.step_s + 0.1 * took
        if read == 0:
            self.decode_s = 0.9 * self.decode_s + 0.1 * took
            self.answer_token_s = 0.9 * self.answer_token_s + 0.1 * took / max(1, answers)
        elif read >= MIN_READ:
            self.prefill_s = 0.9 * self.prefill_s + 0.1 * max(0.0, took - self.decode_s) / read

    def as_answer_tokens(self, prompt_tokens: int) -> int:
        """What reading `prompt_tokens` costs the replica, in answer tokens' worth of its time (a
        prompt token read in a batch costs a fraction of one generated), at least one."""
        return max(1, round(prompt_tokens * min(1.0, self.prefill_s / self.answer_token_s)))

    def slot_wait(self, steps_left: list[int], ahead: int, whole: int) -> float:
        """The wait for a slot behind `ahead` requests: `steps_left`, sorted, are the decoding
        steps until each slot it may take frees up (a free slot goes to the first request waiting);
        each later round of the slots takes `whole` steps."""
        rounds, index = divmod(ahead, len(steps_left))
        return (steps_left[index] + rounds * whole) * self.step_s

    def reading(self, tokens: int) -> float:
        """The time to read `tokens` prompt tokens."""
        return tokens * self.prefill_s
