"""What the providers' prompt caches are known to hold, so that a reservation prices a cached
prefix at the cached rate only where the cache is known to hold it.

Learned from usage alone: a response that read or wrote N tokens of a shared prefix in a model's
cache (router/run/providers/caching.py) says the next request with the same prefix finds N tokens there,
until the provider's time-to-live (5 minutes, renewed by each use) passes. Per router replica; a
replica that has not seen the prefix assumes nothing and reserves at the full input rate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.generation import GenerationParams
from router.run.attempts import RunReport
from router.run.providers.caching import prefix_digest

TTL_S = 300.0  # the providers' default cache lifetime since last use
MAX_ENTRIES = 10_000


@dataclass
class KnownCaches:
    clock: Callable[[], float] = time.monotonic
    ttl_s: float = TTL_S
    _held: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)

    def held(self, params: GenerationParams) -> dict[str, int]:
        """model -> tokens of the request's shared prefix known to be in that model's cache."""
        digest = prefix_digest(params)
        if digest is None:
            return {}
        now = self.clock()
        return {model: tokens for (model, key), (tokens, until) in self._held.items()
                if key == digest and until > now}

    def learn(self, params: GenerationParams, report: RunReport) -> None:
        """Remember what the run's attempts read from or wrote to their models' caches."""
        digest = prefix_digest(params)
        if digest is None:
            return
        for charge in report.charges:
            tokens = charge.usage.cached_tokens + charge.usage.cache_write_tokens
            if tokens and not charge.estimated:
                if len(self._held) >= MAX_ENTRIES:
                    self._held.pop(next(iter(self._held)))
                self._held[(charge.card.name, digest)] = (tokens, self.clock() + self.ttl_s)
