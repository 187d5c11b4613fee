"""First-token limits learned per (provider, model) from observed times to first token (pure, with an
injected clock).

A provider that accepts a request and never answers should be left for the next candidate in
seconds, not after a fixed limit sized for the slowest model. Each model's limit is

    clamp(percentile(recent samples) x factor, floor_s, ceiling_s)

with ceiling_s (the configured first_token_timeout_s) as the prior until `min_samples` samples are
observed. Samples are the times to first token of calls that produced one, the latest `window`
of them and none older than `max_age_s`: a model whose latency changed (or that timed out at its
learned limit for a while, so taught nothing) falls back to the prior and is learned again."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from core.config import RouterConfig


@dataclass(frozen=True)
class TtftSettings:
    ceiling_s: float  # the configured first-token limit: the prior, and the most a limit can be
    enabled: bool = True
    percentile: float = 0.95
    factor: float = 3.0
    floor_s: float = 5.0
    min_samples: int = 20
    window: int = 200
    max_age_s: float = 900.0


class FirstTokenLimits:
    """The learned limits of one router replica, per (provider, model)."""

    def __init__(self, settings: TtftSettings, clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._clock = clock
        self._samples: dict[tuple[str, str], deque[tuple[float, float]]] = {}  # (when, seconds)

    def observe(self, provider: str, model: str, seconds: float) -> None:
        """A call to the model produced its first delta after `seconds`."""
        samples = self._samples.setdefault((provider, model), deque(maxlen=self._settings.window))
        samples.append((self._clock(), seconds))

    def limit(self, provider: str, model: str) -> float:
        """How long a call to the model may wait for its first delta."""
        settings = self._settings
        recent = self._recent(provider, model)
        if not settings.enabled or len(recent) < settings.min_samples:
            return settings.ceiling_s
        learned = percentile(recent, settings.percentile) * settings.factor
        return min(settings.ceiling_s, max(settings.floor_s, learned))

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {f"{p}/{m}": {"samples": len(self._recent(p, m)), "limit_s": round(self.limit(p, m), 3)}
                for p, m in sorted(self._samples)}

    def _recent(self, provider: str, model: str) -> list[float]:
        samples = self._samples.get((provider, model))
        if samples is None:
            return []
        oldest = self._clock() - self._settings.max_age_s
        while samples and samples[0][0] < oldest:
            samples.popleft()
        return [seconds for _, seconds in samples]


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `share` of values at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def learned_limits(config: RouterConfig, clock: Callable[[], float] = time.monotonic
                   ) -> FirstTokenLimits:
    """The limits `config` asks for: learned within its first_token_timeout_s."""
    settings = TtftSettings(config.first_token_timeout_s, **config.learned_first_token.model_dump())
    return FirstTokenLimits(settings, clock)
