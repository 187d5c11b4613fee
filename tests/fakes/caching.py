"""The providers' prompt caching as the fakes implement it, and the fakes' own invoice.

A token is a word here (the fakes count words). OpenAI caches automatically: a prompt's prefixes of
1024 tokens and more, in steps of 128, are kept, scoped by `prompt_cache_key` (OpenAI routes a key's
requests to the same cache; a request without one is a scope of its own); a later prompt reads its
longest kept prefix. Anthropic caches only at `cache_control` breakpoints (on tools, system blocks and
message content blocks, at most 4): a breakpoint's prefix is read when it is kept (the longest such),
and the prefix up to the last breakpoint beyond it is written, if at least the model's minimum; each
stretch between breakpoints is written for its breakpoint's `ttl` (5m or 1h). Entries live their TTL
from their last use."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OPENAI_MIN, OPENAI_STEP = 1024, 128
TTL_S = {"5m": 300.0, "1h": 3600.0}


def _digest(tokens: list[str]) -> str:
    return hashlib.sha256(" ".join(tokens).encode()).hexdigest()


@dataclass
class Entries:
    """Kept prefixes: key -> expiry (monotonic seconds)."""

    clock: Callable[[], float] = time.monotonic
    expiry: dict[tuple[str | None, str], float] = field(default_factory=dict)

    def holds(self, key: tuple[str | None, str]) -> bool:
        return self.expiry.get(key, 0.0) > self.clock()

    def keep(self, key: tuple[str | None, str], ttl_s: float) -> None:
        self.expiry[key] = max(self.expiry.get(key, 0.0), self.clock() + ttl_s)

    def clear(self) -> None:
        self.expiry.clear()


@dataclass
class OpenAICache:
    entries: Entries = field(default_factory=Entries)

    def use(self, tokens: list[str], scope: str | None) -> int:
        """The prompt's cached tokens; keeps its prefixes for the next requests."""
        lengths = range(OPENAI_MIN, len(tokens) + 1, OPENAI_STEP)
        keys = {n: (scope, _digest(tokens[:n])) for n in lengths}
        cached = max((n for n, key in keys.items() if self.entries.holds(key)), default=0)
        for key in keys.values():
            self.entries.keep(key, TTL_S["5m"])
        return cached


@dataclass(frozen=True)
class Segment:
    """A block of the prompt: its tokens, and its breakpoint's TTL if it carries one."""

    tokens: list[str]
    ttl: str | None = None


@dataclass(frozen=True)
class AnthropicUse:
    read: int = 0
    written_5m: int = 0
    written_1h: int = 0


@dataclass
class AnthropicCache:
    entries: Entries = field(default_factory=Entries)

    def use(self, segments: list[Segment], minimum: int) -> AnthropicUse:
        ends: list[tuple[int, str]] = []  # (prefix length, ttl) at each breakpoint
        length = 0
        for segment in segments:
            length += len(segment.tokens)
            if segment.ttl is not None:
                ends.append((length, segment.ttl))
        tokens = [t for s in segments for t in s.tokens]
        keys = [(None, _digest(tokens[:n])) for n, _ in ends]
        read = max((n for (n, _), key in zip(ends, keys, strict=True) if self.entries.holds(key)),
                   default=0)
        written = {"5m": 0, "1h": 0}
        start = read
        for (n, ttl), key in zip(ends, keys, strict=True):
            if n < minimum:
                continue
            if n > start:
                written[ttl] += n - start
                start = n
            self.entries.keep(key, TTL_S[ttl])
        return AnthropicUse(read, written["5m"], written["1h"])


def anthropic_segments(body: dict[str, Any]) -> list[Segment]:
    """The prompt's blocks in Anthropic's cache order: tools, system, messages."""
    segments = [Segment(_words(tool), _ttl(tool)) for tool in body.get("tools") or []]
    system = body.get("system") or []
    for block in [{"text": system}] if isinstance(system, str) else system:
        segments.append(Segment(str(block.get("text", "")).split(), _ttl(block)))
    for message in body.get("messages", []):
        content = message.get("content")
        for block in [{"text": content}] if isinstance(content, str) else content:
            segments.append(Segment(_words(block.get("text", block.get("content", block))),
                                    _ttl(block)))
    return segments


def _words(value: Any) -> list[str]:
    return str(value if isinstance(value, str) else
               {k: v for k, v in value.items() if k != "cache_control"}).split()


def _ttl(block: dict[str, Any]) -> str | None:
    control = block.get("cache_control")
    return None if not control else str(control.get("ttl", "5m"))


def anthropic_minimum(model: str) -> int:
    """The shortest prefix the model caches (Anthropic: 2048 tokens for Haiku 3 and 3.5, 4096 for
    Haiku 4.5, 1024 for Sonnet)."""
    if "haiku-4" in model:
        return 4096
    return 2048 if "haiku" in model else 1024


@dataclass(frozen=True)
class InvoiceLine:
    """One request as the fake bills it, in its own terms (no convention of the router's)."""

    model: str
    input: int  # prompt tokens at the input rate
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    output: int = 0  # reasoning included
    reasoning: int = 0
