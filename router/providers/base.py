"""The one provider interface. Adapters translate their backend's errors into router.errors once,
at this boundary: InvalidRequest for the caller's mistakes, ProviderError for everything else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from deployments.llm.protocol import Completion, Delta, GenerationParams


class Provider(Protocol):
    name: str

    async def complete(self, model: str, params: GenerationParams) -> Completion: ...

    def stream(self, model: str, params: GenerationParams) -> AsyncIterator[Delta]:
        """Deltas as produced; the last one carries finish_reason and usage."""
        ...
