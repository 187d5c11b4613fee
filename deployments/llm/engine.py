"""What an LLM engine is: one async streaming call over normalized chat parameters. LLMServer hosts
an injected engine (llama.cpp, vLLM, or a test's fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from core.generation import Delta, EngineLoad, GenerationParams


class Engine(Protocol):
    def generate(self, params: GenerationParams) -> AsyncIterator[Delta]:
        """Stream deltas; closing the iterator early must stop the generation. With
        `params.prompt` the model continues that text as it is (no chat template), bounded by
        the context and max_tokens as a chat is."""
        ...

    def check_health(self) -> None:
        """Raise if the engine cannot serve."""
        ...

    def load(self) -> EngineLoad | None:
        """Its queue and slots now, or None where it cannot tell (a test's fake)."""
        ...
