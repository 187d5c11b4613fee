"""Stop sequences over streamed text: emit text as soon as it cannot be the start of a stop string."""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str]):
        self._stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add `piece`; return (text safe to emit, whether a stop sequence was hit)."""
        self._pending += piece
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            out, self._pending = self._pending[: min(hits)], ""
            return out, True
        held = self._held_back()
        out = self._pending[: len(self._pending) - held]
        self._pending = self._pending[len(out):]
        return out, False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out

    def _held_back(self) -> int:
        """Length of the longest suffix of pending text that is a proper prefix of a stop string."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(stop[:size]):
                    longest = size
                    break
        return longest
