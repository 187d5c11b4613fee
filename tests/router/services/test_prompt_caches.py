"""What the providers' caches are known to hold: learned from reported usage, forgotten after the
providers' time-to-live, never assumed for a prefix not seen or with caching turned off."""

from __future__ import annotations

from dataclasses import replace

from core.generation import GenerationParams, TokenUsage
from router.run.attempts import Charge, RunReport
from router.services.prompt_caches import KnownCaches
from tests.fakes.catalog import MODELS

CARD = MODELS[2]
PARAMS = GenerationParams([{"role": "system", "content": "A lesson"},
                           {"role": "user", "content": "Q?"}], 5)


def report(usage: TokenUsage, estimated: bool = False) -> RunReport:
    return RunReport(None, charges=(Charge(CARD, usage, estimated),))


def test_a_reported_cache_read_or_write_is_known_until_the_ttl_passes() -> None:
    now = [0.0]
    caches = KnownCaches(clock=lambda: now[0], ttl_s=300)
    assert caches.held(PARAMS) == {}
    caches.learn(PARAMS, report(TokenUsage(110, 5, cache_write_tokens=100)))
    assert caches.held(PARAMS) == {CARD.name: 100}
    now[0] = 299.0
    caches.learn(PARAMS, report(TokenUsage(110, 5, cached_tokens=100)))  # a read renews it
    now[0] = 500.0
    assert caches.held(PARAMS) == {CARD.name: 100}
    now[0] = 600.0
    assert caches.held(PARAMS) == {}


def test_nothing_is_known_from_estimates_other_prefixes_or_with_caching_off() -> None:
    caches = KnownCaches()
    caches.learn(PARAMS, report(TokenUsage(110, 5, cached_tokens=100), estimated=True))
    caches.learn(PARAMS, report(TokenUsage(110, 5)))
    assert caches.held(PARAMS) == {}
    caches.learn(PARAMS, report(TokenUsage(110, 5, cached_tokens=100)))
    other = replace(PARAMS, messages=[{"role": "system", "content": "B lesson"}, PARAMS.messages[1]])
    assert caches.held(other) == {}
    assert caches.held(replace(PARAMS, prompt_cache=False)) == {}
