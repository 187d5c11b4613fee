"""A provider's or engine's stream of deltas read to its end, for tests (the router streams them;
router/run/fallback.py: Run.complete assembles a whole answer its own way)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from core.generation import Completion, Delta, TokenUsage, ToolCallAssembler


async def collect(deltas: AsyncIterator[Delta]) -> Completion:
    parts: list[str] = []
    calls = ToolCallAssembler()
    finish_reason, usage = "stop", TokenUsage()
    async for delta in deltas:
        parts.append(delta.text)
        calls.add(delta.tool_calls)
        if delta.finish_reason is not None:
            finish_reason = delta.finish_reason
        if delta.usage is not None:
            usage = delta.usage
    return Completion("".join(parts), finish_reason, usage, calls.calls())
