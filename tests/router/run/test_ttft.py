"""Learned first-token limits, with an injected clock."""

from __future__ import annotations

import pytest

from router.run.ttft import FirstTokenLimits, TtftSettings, percentile
from tests.fakes.clock import Clock


def limits(**settings) -> tuple[FirstTokenLimits, Clock]:
    clock = Clock()
    return FirstTokenLimits(TtftSettings(**{"ceiling_s": 30.0, "min_samples": 10, "floor_s": 2.0,
                                            **settings}), clock), clock


def observe(found: FirstTokenLimits, *seconds: float, model: str = "gpt-4o-mini") -> None:
    for value in seconds:
        found.observe("openai", model, value)


def test_before_enough_samples_the_limit_is_the_configured_one() -> None:
    found, _ = limits()
    observe(found, *[0.5] * 9)
    assert found.limit("openai", "gpt-4o-mini") == 30.0


def test_the_limit_is_a_high_percentile_times_the_factor() -> None:
    found, _ = limits(percentile=0.9, factor=3)
    observe(found, *[1.0] * 9, 4.0)  # the 90th percentile of ten samples is the 9th smallest
    assert found.limit("openai", "gpt-4o-mini") == 3.0
    observe(found, 4.0)  # now 2 of 11 are slow: the 90th percentile is one of them
    assert found.limit("openai", "gpt-4o-mini") == 12.0


def test_the_limit_stays_within_the_floor_and_the_configured_limit() -> None:
    found, _ = limits()
    observe(found, *[0.1] * 10)
    assert found.limit("openai", "gpt-4o-mini") == 2.0
    observe(found, *[20.0] * 10, model="gpt-4o")
    assert found.limit("openai", "gpt-4o") == 30.0


def test_each_model_learns_its_own_limit() -> None:
    found, _ = limits()
    observe(found, *[1.0] * 10)
    assert found.limit("openai", "gpt-4o-mini") == 3.0
    assert found.limit("openai", "gpt-4o") == 30.0
    assert found.limit("anthropic", "gpt-4o-mini") == 30.0


def test_old_samples_are_forgotten_and_the_prior_returns() -> None:
    found, clock = limits(max_age_s=600)
    observe(found, *[1.0] * 10)
    clock.now += 601
    assert found.limit("openai", "gpt-4o-mini") == 30.0
    assert found.snapshot() == {"openai/gpt-4o-mini": {"samples": 0, "limit_s": 30.0}}


def test_only_the_latest_window_counts() -> None:
    found, _ = limits(window=10)
    observe(found, *[8.0] * 10, *[1.0] * 10)
    assert found.limit("openai", "gpt-4o-mini") == 3.0


def test_learning_can_be_turned_off() -> None:
    found, _ = limits(enabled=False)
    observe(found, *[1.0] * 50)
    assert found.limit("openai", "gpt-4o-mini") == 30.0


@pytest.mark.parametrize(("share", "expected"), [(0.5, 5), (0.95, 10), (1.0, 10), (0.1, 1)])
def test_nearest_rank_percentile(share: float, expected: float) -> None:
    assert percentile([float(v) for v in range(10, 0, -1)], share) == expected
