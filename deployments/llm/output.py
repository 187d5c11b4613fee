"""What one sequence's tokens become: text deltas (or pieces of a tool call), stop strings held back
and honoured, and a last delta with the finish reason and the exact token counts."""

from __future__ import annotations

import codecs
from collections.abc import Callable

from core.generation import Delta, GenerationParams, TokenUsage
from deployments.llm.stops import StopMatcher
from deployments.llm.toolcalls import ToolCallStream, joined, to_calls


class Output:
    def __init__(self, params: GenerationParams, prompt_tokens: int, budget: int,
                 detokenize: Callable[[int], bytes]):
        self._prompt_tokens = prompt_tokens
        self._budget = budget
        self._detokenize = detokenize
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # A required call is JSON under a grammar: stop sequences would only cut it short.
        self._calls = ToolCallStream() if params.required_tools() else None
        self._stops = StopMatcher([] if self._calls else params.stop)
        self.generated = 0
        self._counted = 0
        self._stopped = False

    def feed(self, token: int) -> tuple[Delta | None, str | None]:
        """(what the token adds, if anything yet; the finish reason if the answer ends here)."""
        self.generated += 1
        text, self._stopped = self._stops.feed(self._utf8.decode(self._detokenize(token)))
        delta = self._delta(text)
        if delta is not None:  # tokens whose text is held back count with the next delta
            self._counted = self.generated
        if self._stopped:
            return delta, "stop"
        return delta, "length" if self.generated >= self._budget else None

    def last(self, finish_reason: str) -> Delta:
        tail = "" if self._stopped else \
            self._stops.feed(self._utf8.decode(b"", final=True))[0] + self._stops.flush()
        last = Delta(tail, finish_reason=finish_reason,
                     usage=TokenUsage(self._prompt_tokens, self.generated))
        return last if self._calls is None else to_calls(last, self._calls)

    def _delta(self, text: str) -> Delta | None:
        tokens = self.generated - self._counted
        if self._calls is None:
            return Delta(text, tokens=tokens) if text else None
        delta = to_calls(Delta(text, tokens=tokens), self._calls)
        return delta if delta.tool_calls else None


def merge(deltas: list[Delta]) -> Delta:
    """Deltas that are ready together, as one (every streamed item costs a hop through Ray)."""
    last = deltas[-1]
    return Delta("".join(d.text for d in deltas), last.finish_reason, last.usage,
                 sum(d.tokens or 0 for d in deltas),
                 joined([c for d in deltas for c in d.tool_calls]))
