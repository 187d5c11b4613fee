"""The one provider interface. Adapters translate their SDK's exceptions once, at this boundary
(core.sdk), so the router only ever sees core.errors."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from core.generation import Delta, GenerationParams


class Provider(Protocol):
    name: str

    def stream(self, model: str, params: GenerationParams) -> AsyncGenerator[Delta, None]:
        """Deltas as produced; the last one carries finish_reason and usage. A stream that ends
        without its provider's proper end raises ProviderError."""
        ...

    async def aclose(self) -> None:
        """Release connections (at shutdown)."""
        ...
